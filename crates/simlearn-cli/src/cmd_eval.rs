//! `simlearn eval`: exact retrieval evaluation of embedding files.
//!
//! Without `--query-embeddings` every row of `--embeddings` is a query searched among the
//! other rows (leave-one-out). With it, the query rows are searched in the `--embeddings`
//! gallery (In-Shop style). Class labels give P@1, Recall@K, R-precision, MAP@R, MAP@K, MRR
//! (and NMI/AMI on request); `--continuous-labels` gives nDCG@K and mean label distance@K.
//! `--verification` adds TAR@FAR, EER and ROC AUC of the pairs ([`simlearn_eval::verification`]),
//! `--roc-out` writes the curve.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use simlearn_eval::io::{
    read_class_labels, read_class_labels_joint, read_embeddings, read_float_matrix,
};
use simlearn_eval::verification::{verify, VerificationConfig};
use simlearn_eval::{
    compare_classes, compare_continuous, evaluate_classes, evaluate_continuous, BootstrapConfig,
    ContinuousConfig, EvalConfig, LabelDistance, Matrix, MetricValue, Similarity,
};
use std::path::{Path, PathBuf};

/// Runs above this many query × gallery scores show a progress bar (on a terminal).
const PROGRESS_MIN_SCORES: u128 = 50_000_000;

/// Arguments of `simlearn eval`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Embeddings (.npy, .safetensors or .csv): the gallery, and also the queries unless
    /// --query-embeddings is given.
    #[arg(long, value_name = "FILE")]
    pub embeddings: PathBuf,
    /// Labels of --embeddings: .npy integers or a text file with one label per line (strings
    /// allowed); with --continuous-labels an n×d float matrix (.npy or .csv).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Separate query embeddings searched in the --embeddings gallery.
    #[arg(long, value_name = "FILE", requires = "query_labels")]
    pub query_embeddings: Option<PathBuf>,
    /// Labels of --query-embeddings.
    #[arg(long, value_name = "FILE", requires = "query_embeddings")]
    pub query_labels: Option<PathBuf>,
    /// Cut-offs K, comma-separated [default: 1,2,4,8; continuous labels: nDCG@10..100 and
    /// distance@1..10].
    #[arg(long, value_name = "K,...", value_delimiter = ',')]
    pub k: Option<Vec<usize>>,
    /// Metrics to report, comma-separated: precision_at_1, recall_at_k, r_precision, map_at_r,
    /// map_at_k, mrr, nmi, ami (continuous: ndcg_at_k, mean_label_distance_at_k), or an exact
    /// name such as recall_at_4 [default: all except nmi, ami].
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// Bootstrap 95% confidence intervals over queries (1000 resamples, seeded by --seed).
    #[arg(long)]
    pub ci: bool,
    /// Print every number as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ranking score: cosine, dot or sqeuclidean [default: cosine; continuous labels:
    /// sqeuclidean].
    #[arg(long, value_name = "NAME")]
    pub similarity: Option<String>,
    /// The labels files hold n×d float label vectors (nDCG@K, mean label distance@K).
    #[arg(long)]
    pub continuous_labels: bool,
    /// Distance between continuous labels: euclidean, manhattan or circular:PERIOD.
    #[arg(long, value_name = "NAME", default_value = "euclidean")]
    pub label_distance: String,
    /// Tensor to read from .safetensors embedding files.
    #[arg(long, value_name = "NAME")]
    pub tensor: Option<String>,
    /// Query rows per kNN tile; each thread holds one f32 tile of block × 4096 scores
    /// (query/gallery) or block × block scores (leave-one-out), 32 / 16 MiB at the default.
    #[arg(long, value_name = "ROWS", default_value_t = 2048)]
    pub block_size: usize,
    /// Macro averaging over classes plus a per-class table.
    #[arg(long)]
    pub per_class: bool,
    /// Verification metrics of the pairs (class labels): TAR at FAR 1e-1..1e-4, EER and ROC
    /// AUC over every pair i < j (leave-one-out) or every query × gallery pair. Opt-in: it is
    /// a second pass over all pairs, as costly as the kNN itself on large sets.
    #[arg(long)]
    pub verification: bool,
    /// Write the ROC / DET curve as CSV (threshold,far,tar,frr); implies --verification.
    #[arg(long, value_name = "FILE.csv")]
    pub roc_out: Option<PathBuf>,
    /// Seed of the bootstrap and of k-means (NMI/AMI).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Other embeddings of the same items (same rows, same labels): paired comparison of
    /// --embeddings (A) against this file (B) on the same queries.
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// With --compare and --query-embeddings: the queries embedded by model B.
    #[arg(long, value_name = "FILE", requires = "compare")]
    pub compare_query_embeddings: Option<PathBuf>,
}

/// Runs `simlearn eval`.
pub fn run(args: Args) -> Result<()> {
    if args.block_size == 0 {
        bail!("--block-size must be at least 1");
    }
    if args.query_embeddings.is_some()
        && args.compare.is_some()
        && args.compare_query_embeddings.is_none()
    {
        bail!(
            "--compare with --query-embeddings also needs --compare-query-embeddings (the queries embedded by the second model)"
        );
    }
    let similarity = match &args.similarity {
        Some(s) => Some(Similarity::parse(s).context("--similarity")?),
        None => None,
    };
    let tensor = args.tensor.as_deref();
    if tensor.is_some() {
        let any_st = [
            Some(&args.embeddings),
            args.query_embeddings.as_ref(),
            args.compare.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|p| is_safetensors(p));
        if !any_st {
            bail!("--tensor applies only to .safetensors embedding files");
        }
    }
    let gallery = load_embeddings(&args.embeddings, tensor)?;
    let queries = match &args.query_embeddings {
        Some(p) => {
            let q = load_embeddings(p, tensor)?;
            if q.cols() != gallery.cols() {
                bail!(
                    "dimension mismatch: {} has dimension {}, {} has dimension {}",
                    p.display(),
                    q.cols(),
                    args.embeddings.display(),
                    gallery.cols()
                );
            }
            Some(q)
        }
        None => None,
    };
    let n_scores = match &queries {
        Some(q) => q.rows() as u128 * gallery.rows() as u128,
        None => gallery.rows() as u128 * gallery.rows() as u128 / 2,
    };
    // --json keeps stderr quiet apart from warnings and errors.
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        progress_bar(queries.as_ref().unwrap_or(&gallery).rows(), n_scores)
    };
    let cb = |done: usize, _total: usize| bar.set_position(done as u64);
    let progress: Option<&(dyn Fn(usize, usize) + Sync)> = Some(&cb);
    let bootstrap = args.ci.then_some(BootstrapConfig {
        seed: args.seed,
        ..BootstrapConfig::default()
    });

    let verification = args.verification || args.roc_out.is_some();
    if verification && args.continuous_labels {
        bail!("--verification / --roc-out need class labels, not --continuous-labels");
    }
    if verification && args.compare.is_some() {
        bail!("--verification / --roc-out do not apply with --compare");
    }
    if args.continuous_labels {
        if args.per_class {
            bail!("--per-class needs class labels, not --continuous-labels");
        }
        let labels = load_float_labels(&args.labels, &args.embeddings, gallery.rows())?;
        let query_labels = match (&args.query_labels, &args.query_embeddings, &queries) {
            (Some(p), Some(e), Some(q)) => {
                let l = load_float_labels(p, e, q.rows())?;
                if l.cols() != labels.cols() {
                    bail!(
                        "label dimension mismatch: {} has {} columns, {} has {}",
                        p.display(),
                        l.cols(),
                        args.labels.display(),
                        labels.cols()
                    );
                }
                Some(l)
            }
            _ => None,
        };
        let mut cfg = ContinuousConfig {
            label_distance: parse_label_distance(&args.label_distance)?,
            block_rows: args.block_size,
            bootstrap,
            ..ContinuousConfig::default()
        };
        if let Some(s) = similarity {
            cfg.similarity = s;
        }
        if let Some(ks) = &args.k {
            cfg.ndcg_ks = ks.clone();
            cfg.distance_ks = ks.clone();
        }
        if let Some(other) = &args.compare {
            let (b, qb) = load_compare_sets(&args, other, &gallery, queries.as_ref(), tensor)?;
            let cmp = match (&queries, &query_labels, &qb) {
                (Some(qa), Some(ql), Some(qb)) => {
                    compare_continuous(qa, qb, ql, Some((&gallery, &b, &labels)), &cfg)
                }
                _ => compare_continuous(&gallery, &b, &labels, None, &cfg),
            }?;
            bar.finish_and_clear();
            warn(&cmp.warnings);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&cmp)?);
            } else {
                print!("{}", cmp.to_table());
            }
            return Ok(());
        }
        let mut report = match (&queries, &query_labels) {
            (Some(q), Some(ql)) => {
                evaluate_continuous(q, ql, Some((&gallery, &labels)), &cfg, progress)
            }
            _ => evaluate_continuous(&gallery, &labels, None, &cfg, progress),
        }?;
        bar.finish_and_clear();
        if let Some(sel) = &args.metrics {
            let families = ["ndcg_at_k", "mean_label_distance_at_k"];
            report.metrics = select(&report.metrics, sel, &families)?;
        }
        warn(&report.warnings);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_table());
        }
        return Ok(());
    }

    if args.label_distance != "euclidean" {
        bail!("--label-distance applies only with --continuous-labels");
    }
    // One label space for gallery and queries, so equal strings get equal ids.
    let (labels, query_labels) = match (&args.query_labels, &args.query_embeddings, &queries) {
        (Some(p), Some(e), Some(q)) => {
            let mut both = read_class_labels_joint(&[&args.labels, p])?;
            let ql = both.pop().expect("two files");
            let gl = both.pop().expect("two files");
            check_count(&args.labels, gl.len(), &args.embeddings, gallery.rows())?;
            check_count(p, ql.len(), e, q.rows())?;
            (gl, Some(ql))
        }
        _ => {
            let gl = read_class_labels(&args.labels)?;
            check_count(&args.labels, gl.len(), &args.embeddings, gallery.rows())?;
            (gl, None)
        }
    };
    let families = [
        "precision_at_1",
        "recall_at_k",
        "r_precision",
        "map_at_r",
        "map_at_k",
        "mrr",
        "nmi",
        "ami",
    ];
    let wants_nmi = args
        .metrics
        .as_ref()
        .is_some_and(|m| m.iter().any(|n| matches!(n.trim(), "nmi" | "ami")));
    let mut cfg = EvalConfig {
        block_rows: args.block_size,
        per_class: args.per_class,
        nmi: wants_nmi,
        bootstrap,
        seed: args.seed,
        ..EvalConfig::default()
    };
    if let Some(s) = similarity {
        cfg.similarity = s;
    }
    if let Some(ks) = &args.k {
        cfg.ks = ks.clone();
    }

    if let Some(other) = &args.compare {
        let (b, qb) = load_compare_sets(&args, other, &gallery, queries.as_ref(), tensor)?;
        let mut cmp = match (&queries, &query_labels, &qb) {
            (Some(qa), Some(ql), Some(qb)) => {
                compare_classes(qa, qb, ql, Some((&gallery, &b, &labels)), &cfg)
            }
            _ => compare_classes(&gallery, &b, &labels, None, &cfg),
        }?;
        bar.finish_and_clear();
        if let Some(sel) = &args.metrics {
            let names: Vec<MetricValue> = cmp
                .metrics
                .iter()
                .map(|m| MetricValue {
                    name: m.name.clone(),
                    value: m.diff,
                    ci: None,
                })
                .collect();
            let keep: Vec<String> = select(&names, sel, &families)?
                .into_iter()
                .map(|m| m.name)
                .collect();
            cmp.metrics.retain(|m| keep.contains(&m.name));
        }
        warn(&cmp.warnings);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&cmp)?);
        } else {
            println!("A = {}, B = {}", args.embeddings.display(), other.display());
            print!("{}", cmp.to_table());
        }
        return Ok(());
    }

    let mut report = match (&queries, &query_labels) {
        (Some(q), Some(ql)) => evaluate_classes(q, ql, Some((&gallery, &labels)), &cfg, progress),
        _ => evaluate_classes(&gallery, &labels, None, &cfg, progress),
    }?;
    bar.finish_and_clear();
    if let Some(sel) = &args.metrics {
        report.metrics = select(&report.metrics, sel, &families)?;
        if let Some(rows) = &mut report.per_class {
            for row in rows {
                row.metrics = select(&row.metrics, sel, &families)?;
            }
        }
    }
    warn(&report.warnings);
    let ver = if verification {
        let vcfg = VerificationConfig {
            similarity: cfg.similarity,
            block_rows: args.block_size.min(4096),
            ..VerificationConfig::default()
        };
        let v = match (&queries, &query_labels) {
            (Some(q), Some(ql)) => verify(q, ql, Some((&gallery, &labels)), &vcfg),
            _ => verify(&gallery, &labels, None, &vcfg),
        }
        .context("--verification")?;
        if let Some(p) = &args.roc_out {
            std::fs::write(p, v.roc_csv())
                .with_context(|| format!("--roc-out {}: cannot write", p.display()))?;
        }
        Some(v)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let (Some(v), Some(obj)) = (&ver, value.as_object_mut()) {
            obj.insert("verification".into(), serde_json::to_value(v)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.to_table());
        if let Some(v) = &ver {
            print!("{}", v.to_table());
        }
    }
    Ok(())
}

fn load_embeddings(path: &Path, tensor: Option<&str>) -> Result<Matrix> {
    // --tensor names a tensor of the .safetensors inputs; a .npy query file beside a
    // .safetensors gallery is read as is.
    let t = if is_safetensors(path) { tensor } else { None };
    Ok(read_embeddings(path, t)?)
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

fn check_count(labels: &Path, n: usize, emb: &Path, rows: usize) -> Result<()> {
    if n != rows {
        bail!(
            "count mismatch: {} holds {} labels but {} has {} rows",
            labels.display(),
            n,
            emb.display(),
            rows
        );
    }
    Ok(())
}

fn load_float_labels(path: &Path, emb: &Path, rows: usize) -> Result<Matrix> {
    let l = read_float_matrix(path)?;
    if l.rows() != rows {
        bail!(
            "count mismatch: {} holds {} label rows but {} has {} rows",
            path.display(),
            l.rows(),
            emb.display(),
            rows
        );
    }
    Ok(l)
}

/// Parses `euclidean`, `manhattan` or `circular:PERIOD` (PERIOD > 0, finite).
fn parse_label_distance(s: &str) -> Result<LabelDistance> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "euclidean" => return Ok(LabelDistance::Euclidean),
        "manhattan" => return Ok(LabelDistance::Manhattan),
        _ => {}
    }
    if let Some(p) = s.strip_prefix("circular:") {
        let period: f64 = p
            .trim()
            .parse()
            .with_context(|| format!("--label-distance: cannot parse period {p:?}"))?;
        if !(period.is_finite() && period > 0.0) {
            bail!(
                "--label-distance: the circular period must be positive and finite, got {period}"
            );
        }
        return Ok(LabelDistance::Circular { period });
    }
    bail!("--label-distance: unknown {s:?}; expected euclidean, manhattan or circular:PERIOD")
}

/// Keeps the metrics named in `sel`: an exact name (`recall_at_4`) or a family from
/// `families` (`recall_at_k` keeps every `recall_at_{number}`).
fn select(metrics: &[MetricValue], sel: &[String], families: &[&str]) -> Result<Vec<MetricValue>> {
    let sel: Vec<&str> = sel
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    for s in &sel {
        let known = families.contains(s) || metrics.iter().any(|m| m.name == *s);
        let family_member = families.iter().any(|f| {
            f.strip_suffix("k")
                .and_then(|stem| s.strip_prefix(stem))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        });
        if !known && !family_member {
            bail!(
                "--metrics: unknown metric {s:?}; expected one of {}",
                families.join(", ")
            );
        }
    }
    Ok(metrics
        .iter()
        .filter(|m| {
            sel.iter().any(|s| {
                if m.name == *s {
                    return true;
                }
                s.strip_suffix("k").is_some_and(|stem| {
                    families.contains(s)
                        && m.name.strip_prefix(stem).is_some_and(|rest| {
                            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                        })
                })
            })
        })
        .cloned()
        .collect())
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// A bar on stderr for runs of at least [`PROGRESS_MIN_SCORES`] scores; hidden otherwise
/// (and by indicatif itself when stderr is not a terminal).
fn progress_bar(n_queries: usize, n_scores: u128) -> ProgressBar {
    if n_scores < PROGRESS_MIN_SCORES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(n_queries as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} kNN [{bar:40}] {pos}/{len} queries, ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Loads the second model's embeddings for `--compare` (and its queries, with separate query
/// sets), checking that they describe the same items as the first model's.
fn load_compare_sets(
    args: &Args,
    other: &Path,
    gallery: &Matrix,
    queries: Option<&Matrix>,
    tensor: Option<&str>,
) -> Result<(Matrix, Option<Matrix>)> {
    let b = load_embeddings(other, tensor)?;
    if b.rows() != gallery.rows() {
        bail!(
            "{} has {} rows but {} has {}: --compare needs embeddings of the same items",
            other.display(),
            b.rows(),
            args.embeddings.display(),
            gallery.rows()
        );
    }
    let qb = match (queries, &args.compare_query_embeddings) {
        (Some(qa), Some(qb_path)) => {
            let qb = load_embeddings(qb_path, tensor)?;
            if qb.rows() != qa.rows() {
                bail!(
                    "{} has {} rows but the queries have {}",
                    qb_path.display(),
                    qb.rows(),
                    qa.rows()
                );
            }
            if qb.cols() != b.cols() {
                bail!(
                    "dimension mismatch: {} has dimension {}, {} has dimension {}",
                    qb_path.display(),
                    qb.cols(),
                    other.display(),
                    b.cols()
                );
            }
            Some(qb)
        }
        _ => None,
    };
    Ok((b, qb))
}
