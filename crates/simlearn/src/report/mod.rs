//! Run reports: `simlearn report RUN_DIR… --out DIR` writes `DIR/index.html`, one `.svg` file per
//! figure, and `DIR/report.json` with the table's numbers.
//!
//! For every run folder (see [`crate::train`]) the report shows
//! 1. training curves: epoch means of every loss term, the learning rate, and the validation
//!    metrics of the validated epochs (from `metrics.jsonl`);
//! 2. for class labels, histograms of the cosine similarity of positive pairs (same class) and
//!    negative pairs of the test set, for the untrained head (`cfg.model.init(cfg.train.seed)`)
//!    and the trained one (`best.safetensors`, else `last.safetensors`);
//! 3. for image data, query → top-k retrieval grids for a seeded random set of queries and for
//!    the worst queries (lowest per-query MAP@R for class labels, lowest per-query nDCG at the
//!    first cut-off for continuous labels). Pixel sources (`digits`: 8 × 8, `rotated_digits`:
//!    16 × 16 grey pixels) are drawn from the features; feature files made from images (a
//!    `<stem>_paths.txt` next to the validation features, as `simlearn embed` writes, one image
//!    path per row) are drawn as thumbnails of those images, embedded in the SVG as PNG `data:`
//!    URIs ([`image_paths`], [`grid::thumbnail_data_uri`]);
//! 4. a results table: every metric of the trained head with its 95 % percentile-bootstrap
//!    interval ([`BootstrapConfig::default`]: 1,000 resamples), and the paired differences between
//!    every two runs evaluated on the same test set (identical features and labels) from
//!    [`simlearn_eval::compare_classes`] / [`simlearn_eval::compare_continuous`];
//! 5. for continuous labels, the mean label distance of the r-th retrieved item against r, with
//!    the untrained head and the oracle (the r-th smallest label distance) for reference;
//! 6. for class labels, verification of the test pairs (every pair `i < j`, cosine): an ROC
//!    figure (TAR against FAR) and a DET figure (FRR against FAR on a log axis), trained and
//!    untrained head, and TAR at FAR 1e-1…1e-4, EER and ROC AUC in the results table and
//!    `report.json` ([`simlearn_eval::verification`]; no intervals). A test set without
//!    same-class or without different-class pairs gets a warning instead.
//!
//! Image fine-tuning runs ([`ReportRun::load_images`]) are reported on their validation images,
//! embedded by the initial backbone with the untrained head and by the trained backbone + head
//! ([`crate::train::images::embed_validation`]); their grids show thumbnails of the images.
//!
//! Evaluation follows the trainer's validation: class labels leave-one-out with cosine
//! similarity and the run's `eval.ks`; continuous labels leave-one-out with squared Euclidean
//! ranking and the run's label distance ([`ContinuousConfig::default`] cut-offs).

pub mod grid;
pub mod plot;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::Serialize;
use simlearn_eval::verification::{verify, Verification, VerificationConfig};
use simlearn_eval::{
    compare_classes, compare_continuous, evaluate_classes, evaluate_continuous, knn_leave_one_out,
    BootstrapConfig, ContinuousConfig, EvalConfig, KnnConfig, LabelDistance, Matrix, MetricValue,
    Neighbours, PairedDifference,
};

use crate::data::{FeatureDataset, Labels};
use crate::train::images::embed_validation;
use crate::train::{embed, load_run_head, EpochRecord, TrainConfig, TrainObserver};
use grid::{escape, retrieval_grid_svg_with, GridCell, GridImages, GridRow};
use plot::{Series, PALETTE};
use stats::{
    ideal_label_distance_by_rank, label_distance_by_rank, pair_cosines, seeded_queries,
    sorted_label_distances, worst_queries, Histogram,
};

/// Why a report could not be written; every message is one line naming the file or parameter.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run folder that cannot be read (names the file).
    #[error("{0}")]
    Run(String),
    /// A bad option (names it).
    #[error("{0}")]
    Options(String),
    /// Evaluation failed (names the run).
    #[error("{run}: {msg}")]
    Eval {
        /// The run's name.
        run: String,
        /// The evaluator's message.
        msg: String,
    },
    /// Drawing a chart failed.
    #[error("plot: {0}")]
    Plot(String),
    /// Writing the output failed (names the file).
    #[error("{0}")]
    Io(String),
}

/// Report settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Random queries per retrieval grid, and worst queries per grid (default 8).
    pub queries: usize,
    /// Seed of the random query choice (default 0).
    pub seed: u64,
    /// Neighbours shown per query (default 8).
    pub top_k: usize,
    /// Ranks in the label-distance-by-rank figure (default 10, the largest mean-label-distance
    /// cut-off of [`ContinuousConfig::default`], after Kim et al. 2019).
    pub rank_k: usize,
    /// Intervals of the results table (default [`BootstrapConfig::default`]: 95 %, 1,000
    /// resamples).
    pub bootstrap: BootstrapConfig,
    /// Items whose pairs enter the similarity histograms; larger test sets are subsampled
    /// (seeded) to this many (default 2,000, about 2 million pairs).
    pub max_histogram_items: usize,
    /// Histogram bins over `[−1, 1]` (default 40).
    pub histogram_bins: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            queries: 8,
            seed: 0,
            top_k: 8,
            rank_k: 10,
            bootstrap: BootstrapConfig::default(),
            max_histogram_items: 2000,
            histogram_bins: 40,
        }
    }
}

/// One run folder with everything the report needs.
pub struct ReportRun {
    /// Display name (the folder's name, made unique by [`render`]).
    pub name: String,
    /// The run folder.
    pub dir: PathBuf,
    /// Its resolved `config.toml`.
    pub config: TrainConfig,
    /// Its `metrics.jsonl`.
    pub history: Vec<EpochRecord>,
    /// The evaluation set (the run's validation/test data): the head's input features of a
    /// feature run; for an image run, its labels with a zero-column feature matrix.
    pub test: FeatureDataset,
    /// Image runs: the image file of every test row (retrieval-grid thumbnails, and with the
    /// labels what makes two runs' test sets the same).
    pub test_paths: Option<Vec<PathBuf>>,
    /// Test-set embeddings of the untrained model (same seed as the run).
    pub untrained_embeddings: Matrix,
    /// Test-set embeddings of the trained model (`best`, else `last`).
    pub trained_embeddings: Matrix,
    /// `best_epoch` from `state.json`, 0-based, when present.
    pub best_epoch: Option<usize>,
}

/// Reads a run folder's `config.toml`.
pub fn read_run_config(dir: &Path) -> Result<TrainConfig, ReportError> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ReportError::Run(format!("{}: {e}", path.display())))?;
    TrainConfig::from_toml(&text).map_err(|e| ReportError::Run(format!("{}: {e}", path.display())))
}

/// Reads a `metrics.jsonl` file: one [`EpochRecord`] per non-empty line.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochRecord>, ReportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReportError::Run(format!("{}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ReportError::Run(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// `(width, height)` of the images of a data source whose features are pixels: `digits`
/// 8 × 8, `rotated_digits` 16 × 16 (see [`crate::data`]); `None` for feature files.
pub fn image_shape(source: &str) -> Option<(usize, usize)> {
    match source {
        "digits" => Some((8, 8)),
        "rotated_digits" => Some((16, 16)),
        _ => None,
    }
}

/// Size (pixels) that retrieval-grid thumbnails of image files are downscaled to fit.
pub const THUMBNAIL_SIZE: u32 = grid::CELL as u32;

/// The paths file of a feature file: `<dir>/<stem>_paths.txt` (what `simlearn embed` writes
/// next to `<dir>/<stem>.npy`).
pub fn paths_file(features: &Path) -> PathBuf {
    let stem = features
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    features.with_file_name(format!("{stem}_paths.txt"))
}

/// The image file of every row of the run's validation features, when `data.val_features` has a
/// paths file ([`paths_file`]) with one path per row (`n` rows). Relative paths are tried as
/// given (relative to the working directory, as `simlearn embed` wrote them), then relative to
/// the paths file's folder and each folder above it. `Ok(None)`: no paths file (or the test set
/// is split from the training file); `Err`: a paths file that does not fit (names it).
pub fn image_paths(config: &TrainConfig, n: usize) -> Result<Option<Vec<PathBuf>>, String> {
    let Some(features) = config.data.val_features.as_deref() else {
        return Ok(None);
    };
    let list = paths_file(features);
    if !list.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != n {
        return Err(format!(
            "{}: {} image paths for {n} feature rows; retrieval grids left out",
            list.display(),
            lines.len()
        ));
    }
    let base = list.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Some(
        lines
            .iter()
            .map(|l| {
                let p = PathBuf::from(l.trim());
                if p.is_absolute() || p.exists() {
                    return p;
                }
                base.ancestors()
                    .map(|a| a.join(&p))
                    .find(|c| c.exists())
                    .unwrap_or(p)
            })
            .collect(),
    ))
}

impl ReportRun {
    /// Loads the run folder `dir` (config, metrics, untrained and trained heads) with `test`
    /// as its evaluation set, and embeds it with both heads.
    pub fn load(dir: &Path, test: FeatureDataset, device: &Device) -> Result<Self, ReportError> {
        let config = read_run_config(dir)?;
        if config.model.input_dim != test.dim() {
            return Err(ReportError::Run(format!(
                "{}: model.input_dim is {} but the test features have {} columns",
                dir.join("config.toml").display(),
                config.model.input_dim,
                test.dim()
            )));
        }
        let untrained = config
            .model
            .init(config.train.seed, device)
            .map_err(|e| ReportError::Run(format!("{}: {e}", dir.join("config.toml").display())))?;
        let trained = load_run_head(dir, device)
            .map_err(|e| ReportError::Run(format!("{}: {e}", dir.display())))?;
        let untrained_embeddings = embed(&untrained, &test.features, device);
        let trained_embeddings = embed(&trained, &test.features, device);
        Self::assemble(
            dir,
            config,
            test,
            None,
            untrained_embeddings,
            trained_embeddings,
        )
    }

    /// Loads an image fine-tuning run folder (`data.source = "images"`): its validation images
    /// embedded by the model before training and by the trained backbone + head
    /// ([`embed_validation`]; from the frozen-stage cache when the run used one).
    pub fn load_images(
        dir: &Path,
        device: &Device,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, ReportError> {
        let config = read_run_config(dir)?;
        let v = embed_validation(dir, &config, device, observer)
            .map_err(|e| ReportError::Run(format!("{}: {e}", dir.display())))?;
        let n = v.labels.len();
        let test = FeatureDataset {
            features: Matrix::new(n, 0, Vec::new()).map_err(|e| ReportError::Run(e.to_string()))?,
            labels: Labels::Class(v.labels),
        };
        Self::assemble(dir, config, test, Some(v.paths), v.untrained, v.trained)
    }

    fn assemble(
        dir: &Path,
        config: TrainConfig,
        test: FeatureDataset,
        test_paths: Option<Vec<PathBuf>>,
        untrained_embeddings: Matrix,
        trained_embeddings: Matrix,
    ) -> Result<Self, ReportError> {
        let history = read_metrics(&dir.join("metrics.jsonl"))?;
        let best_epoch = std::fs::read_to_string(dir.join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("best_epoch").and_then(|b| b.as_u64()))
            .map(|b| b as usize);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "run".into());
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            config,
            history,
            test,
            test_paths,
            untrained_embeddings,
            trained_embeddings,
            best_epoch,
        })
    }

    fn loss_name(&self) -> String {
        let value = toml::Value::try_from(&self.config).ok();
        let get = |v: &toml::Value, path: &[&str]| -> Option<String> {
            let mut cur = v;
            for p in path {
                cur = cur.get(p)?;
            }
            cur.as_str().map(str::to_string)
        };
        value
            .and_then(|v| {
                if self.config.continuous.is_some() {
                    get(&v, &["continuous", "loss", "name"])
                } else {
                    get(&v, &["loss", "name"])
                }
            })
            .unwrap_or_else(|| "?".into())
    }

    fn label_distance(&self) -> LabelDistance {
        self.config
            .continuous
            .as_ref()
            .map(|c| c.label_distance)
            .unwrap_or_default()
    }
}

/// Paths written by [`render`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    /// `index.html`.
    pub index: PathBuf,
    /// `report.json`.
    pub json: PathBuf,
    /// Every figure, in page order.
    pub figures: Vec<PathBuf>,
}

/// Summary statistics of one similarity histogram (in `report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PairSummary {
    /// Positive pairs counted.
    pub positive_pairs: usize,
    /// Negative pairs counted.
    pub negative_pairs: usize,
    /// Mean cosine of the positive pairs.
    pub mean_positive: f64,
    /// Mean cosine of the negative pairs.
    pub mean_negative: f64,
}

/// Label distance against rank (in `report.json`); entry `r − 1` is rank `r`.
#[derive(Debug, Clone, Serialize)]
pub struct RankDistances {
    /// The trained head.
    pub trained: Vec<f64>,
    /// The untrained head.
    pub untrained: Vec<f64>,
    /// The oracle: r-th smallest label distance.
    pub ideal: Vec<f64>,
}

/// Verification of the test pairs (in `report.json`), trained and untrained head.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationSummary {
    /// The trained head.
    pub trained: Verification,
    /// The untrained head.
    pub untrained: Verification,
}

/// The results-table rows of a verification: `tar_at_far_{f}`…, `eer`, `roc_auc`.
pub fn verification_rows(v: &Verification) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = v.tar_at_far.iter().map(|t| (t.name(), t.tar)).collect();
    rows.push(("eer".into(), v.eer));
    rows.push(("roc_auc".into(), v.roc_auc));
    rows
}

/// One run in `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Display name.
    pub name: String,
    /// Run folder.
    pub dir: PathBuf,
    /// Loss name from the config.
    pub loss: String,
    /// `data.source` from the config.
    pub data_source: String,
    /// `"class"` or `"continuous"`.
    pub labels: &'static str,
    /// Test items.
    pub test_items: usize,
    /// Index of the group of runs sharing this test set.
    pub test_set: usize,
    /// Epochs in `metrics.jsonl`.
    pub epochs: usize,
    /// Best epoch (0-based) from `state.json`.
    pub best_epoch: Option<usize>,
    /// Trained head: every metric with its bootstrap interval.
    pub metrics: Vec<MetricValue>,
    /// Untrained head, same metrics and intervals.
    pub untrained_metrics: Vec<MetricValue>,
    /// Class labels: pair-similarity summaries `(untrained, trained)`.
    pub pair_similarity: Option<(PairSummary, PairSummary)>,
    /// Continuous labels: label distance by rank.
    pub label_distance_by_rank: Option<RankDistances>,
    /// Class labels: verification of the test pairs (TAR@FAR, EER, ROC AUC).
    pub verification: Option<VerificationSummary>,
    /// Figure files of this run, relative to the report folder.
    pub figures: Vec<String>,
    /// CSV of the trained head's per-query metrics (`row` in the test set, then one column per
    /// metric), relative to the report folder: what the intervals resample, for analyses the
    /// report does not make (e.g. a difference of two runs' differences).
    pub per_query: String,
}

/// One paired comparison in `report.json`: run `a` minus run `b`.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonSummary {
    /// Name of run A.
    pub a: String,
    /// Name of run B.
    pub b: String,
    /// Test-set group.
    pub test_set: usize,
    /// Queries in the paired averages.
    pub n_evaluated: usize,
    /// Every per-query metric: A, B, A − B, its interval and the sign-flip fraction.
    pub metrics: Vec<PairedDifference>,
}

/// The whole `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    /// Interval level of every interval.
    pub level: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Bootstrap seed.
    pub bootstrap_seed: u64,
    /// Random-query seed.
    pub seed: u64,
    /// Runs in input order.
    pub runs: Vec<RunSummary>,
    /// Paired differences of every two runs on the same test set.
    pub comparisons: Vec<ComparisonSummary>,
}

/// What one run's evaluation produced, kept for the pairwise comparisons and the page.
struct Evaluated {
    summary: RunSummary,
    /// Figure files (relative to the report folder) per page section.
    curves: String,
    histograms: Option<String>,
    /// `(file, caption)` of each retrieval grid.
    grids: Vec<(String, String)>,
    rank: Option<String>,
    /// ROC and DET figure files.
    verification: Vec<String>,
    warnings: Vec<String>,
}

fn write_file(path: &Path, content: &str) -> Result<(), ReportError> {
    std::fs::write(path, content).map_err(|e| ReportError::Io(format!("{}: {e}", path.display())))
}

/// `row,<metric>,...` and one line per evaluated query; values in full precision (Rust's
/// shortest round-trip form), so that means recomputed from the file equal the report's.
fn per_query_csv<'a>(
    rows: &[usize],
    names: &'a [String],
    values: impl Fn(&str) -> Option<&'a [f64]>,
) -> String {
    let columns: Vec<&[f64]> = names.iter().map(|m| values(m).unwrap_or(&[])).collect();
    let mut out = String::from("row");
    for m in names {
        out.push(',');
        out.push_str(m);
    }
    out.push('\n');
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&row.to_string());
        for c in &columns {
            out.push(',');
            match c.get(i) {
                Some(v) => out.push_str(&v.to_string()),
                None => out.push_str("NaN"),
            }
        }
        out.push('\n');
    }
    out
}

/// A file-name-safe version of `name`.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "run".into()
    } else {
        s
    }
}

fn format_label(labels: &Labels, i: usize) -> String {
    match labels {
        Labels::Class(v) => format!("class {}", v[i]),
        Labels::Continuous(m) => m
            .row(i)
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A neighbour's caption: its class, or its label and label distance to the query.
fn neighbour_caption(labels: &Labels, distance: &LabelDistance, q: usize, g: usize) -> String {
    match labels {
        Labels::Class(_) => format_label(labels, g),
        Labels::Continuous(m) => format!(
            "{} (Δ{:.0})",
            format_label(labels, g),
            distance.dist(m.row(q), m.row(g))
        ),
    }
}

/// Which neighbours of query `q` count as relevant: same class, or (continuous labels) a label
/// distance no larger than the query's k-th smallest label distance, i.e. the neighbour could
/// be in an ideal top-k.
fn relevance(labels: &Labels, distance: &LabelDistance, q: usize, neighbours: &[u32]) -> Vec<bool> {
    match labels {
        Labels::Class(v) => neighbours.iter().map(|&g| v[g as usize] == v[q]).collect(),
        Labels::Continuous(m) => {
            let sorted = sorted_label_distances(m, q, distance);
            let radius = sorted
                .get(neighbours.len().saturating_sub(1))
                .copied()
                .unwrap_or(f64::INFINITY);
            neighbours
                .iter()
                .map(|&g| distance.dist(m.row(q), m.row(g as usize)) <= radius + 1e-9)
                .collect()
        }
    }
}

fn grid_rows(
    run: &ReportRun,
    neigh: &Neighbours,
    queries: &[usize],
    per_query: &BTreeMap<usize, f64>,
    metric: &str,
) -> Vec<GridRow> {
    let distance = run.label_distance();
    queries
        .iter()
        .map(|&q| {
            let (idx, _) = neigh.row(q);
            let ok = relevance(&run.test.labels, &distance, q, idx);
            GridRow {
                query: q,
                caption: match &run.test.labels {
                    Labels::Class(_) => format!("#{q} {}", format_label(&run.test.labels, q)),
                    Labels::Continuous(_) => {
                        format!("#{q} label {}", format_label(&run.test.labels, q))
                    }
                },
                note: per_query
                    .get(&q)
                    .map(|v| format!("{metric} {v:.3}"))
                    .unwrap_or_default(),
                neighbours: idx
                    .iter()
                    .zip(ok)
                    .map(|(&g, correct)| GridCell {
                        item: g as usize,
                        caption: neighbour_caption(&run.test.labels, &distance, q, g as usize),
                        correct,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn eval_err(run: &str) -> impl Fn(simlearn_eval::EvalError) -> ReportError + '_ {
    move |e| ReportError::Eval {
        run: run.to_string(),
        msg: e.to_string(),
    }
}

fn evaluate_run(
    run: &ReportRun,
    index: usize,
    out: &Path,
    opts: &ReportOptions,
) -> Result<Evaluated, ReportError> {
    let prefix = format!("run{}-{}", index + 1, slug(&run.name));
    let err = eval_err(&run.name);
    let (trained_emb, untrained_emb) = (&run.trained_embeddings, &run.untrained_embeddings);
    let n = run.test.len();
    if n < 2 {
        return Err(ReportError::Run(format!(
            "{}: the test set has {n} item(s); retrieval needs at least 2",
            run.name
        )));
    }
    let mut figures = Vec::new();
    let mut warnings = Vec::new();

    let curves = format!("{prefix}-training.svg");
    write_file(
        &out.join(&curves),
        &plot::training_curves_svg(&format!("{}: training", run.name), &run.history)?,
    )?;
    figures.push(curves.clone());
    let per_query_file = format!("{prefix}-per-query.csv");

    let top_k = opts.top_k.min(n - 1);
    let shape = image_shape(&run.config.data.source).filter(|(w, h)| w * h == run.test.dim());
    let mut histograms = None;
    let mut rank = None;
    let mut pair_similarity = None;
    let mut by_rank = None;
    let mut verification = None;
    let mut verification_figures = Vec::new();
    let (metrics, untrained_metrics, neigh, metric_name, eval_rows);
    let per_query: BTreeMap<usize, f64>;
    match &run.test.labels {
        Labels::Class(labels) => {
            let cfg = EvalConfig {
                ks: run.config.eval.ks.clone(),
                seed: run.config.train.seed,
                bootstrap: Some(opts.bootstrap),
                ..EvalConfig::default()
            };
            let rt = evaluate_classes(trained_emb, labels, None, &cfg, None).map_err(&err)?;
            let ru = evaluate_classes(untrained_emb, labels, None, &cfg, None).map_err(&err)?;
            warnings.extend(rt.warnings.iter().cloned());
            write_file(
                &out.join(&per_query_file),
                &per_query_csv(rt.evaluated_queries(), rt.per_query_names(), |m| {
                    rt.per_query(m)
                }),
            )?;
            metric_name = "map_at_r".to_string();
            eval_rows = rt.evaluated_queries().to_vec();
            per_query = rt
                .per_query(&metric_name)
                .map(|v| eval_rows.iter().copied().zip(v.iter().copied()).collect())
                .unwrap_or_default();
            metrics = rt.metrics;
            untrained_metrics = ru.metrics;
            neigh = knn_leave_one_out(
                trained_emb,
                &KnnConfig {
                    k: top_k,
                    similarity: cfg.similarity,
                    ..KnnConfig::default()
                },
                None,
            )
            .map_err(&err)?;

            // Subsample large test sets: the pair count grows quadratically.
            let items = if n > opts.max_histogram_items {
                let mut rows = seeded_queries(
                    &(0..n).collect::<Vec<_>>(),
                    opts.max_histogram_items,
                    opts.seed,
                );
                rows.sort_unstable();
                rows
            } else {
                (0..n).collect()
            };
            let sub_labels: Vec<i64> = items.iter().map(|&i| labels[i]).collect();
            let hist = |emb: &Matrix| {
                let (p, q) = pair_cosines(&emb.select_rows(&items), &sub_labels);
                (
                    Histogram::new(&p, -1.0, 1.0, opts.histogram_bins),
                    Histogram::new(&q, -1.0, 1.0, opts.histogram_bins),
                )
            };
            let (up, un) = hist(untrained_emb);
            let (tp, tn) = hist(trained_emb);
            let file = format!("{prefix}-similarity.svg");
            let sub = if items.len() < n {
                format!(" ({} of {n} test items)", items.len())
            } else {
                String::new()
            };
            write_file(
                &out.join(&file),
                &plot::similarity_histograms_svg(
                    &format!("{}: cosine similarity of test pairs{sub}", run.name),
                    &[("untrained head", &up, &un), ("trained head", &tp, &tn)],
                )?,
            )?;
            figures.push(file.clone());
            histograms = Some(file);
            let summary = |p: &Histogram, q: &Histogram| PairSummary {
                positive_pairs: p.total,
                negative_pairs: q.total,
                mean_positive: p.mean,
                mean_negative: q.mean,
            };
            pair_similarity = Some((summary(&up, &un), summary(&tp, &tn)));

            let vcfg = VerificationConfig {
                curve_step: 5e-3,
                ..VerificationConfig::default()
            };
            match verify(trained_emb, labels, None, &vcfg)
                .and_then(|t| Ok((t, verify(untrained_emb, labels, None, &vcfg)?)))
            {
                Ok((t, u)) => {
                    for (kind, svg) in [
                        (
                            "roc",
                            plot::roc_svg(&format!("{}: ROC of test pairs", run.name), &t, &u)?,
                        ),
                        (
                            "det",
                            plot::det_svg(&format!("{}: DET of test pairs", run.name), &t, &u)?,
                        ),
                    ] {
                        let file = format!("{prefix}-{kind}.svg");
                        write_file(&out.join(&file), &svg)?;
                        figures.push(file.clone());
                        verification_figures.push(file);
                    }
                    verification = Some(VerificationSummary {
                        trained: t,
                        untrained: u,
                    });
                }
                Err(e) => warnings.push(format!("verification metrics left out: {e}")),
            }
        }
        Labels::Continuous(labels) => {
            let cfg = ContinuousConfig {
                label_distance: run.label_distance(),
                bootstrap: Some(opts.bootstrap),
                ..ContinuousConfig::default()
            };
            let rt = evaluate_continuous(trained_emb, labels, None, &cfg, None).map_err(&err)?;
            let ru = evaluate_continuous(untrained_emb, labels, None, &cfg, None).map_err(&err)?;
            warnings.extend(rt.warnings.iter().cloned());
            let rows: Vec<usize> = (0..n).collect();
            write_file(
                &out.join(&per_query_file),
                &per_query_csv(&rows, rt.per_query_names(), |m| rt.per_query(m)),
            )?;
            let ndcg = rt
                .ndcg_ks
                .first()
                .map(|k| format!("ndcg_at_{k}"))
                .unwrap_or_else(|| "ndcg_at_10".into());
            eval_rows = (0..n).collect::<Vec<_>>();
            per_query = rt
                .per_query(&ndcg)
                .map(|v| v.iter().copied().enumerate().collect())
                .unwrap_or_default();
            metric_name = ndcg;
            metrics = rt.metrics;
            untrained_metrics = ru.metrics;
            let knn_cfg = |k| KnnConfig {
                k,
                similarity: cfg.similarity,
                ..KnnConfig::default()
            };
            neigh = knn_leave_one_out(trained_emb, &knn_cfg(top_k), None).map_err(&err)?;
            let rank_k = opts.rank_k.min(n - 1);
            let nt = knn_leave_one_out(trained_emb, &knn_cfg(rank_k), None).map_err(&err)?;
            let nu = knn_leave_one_out(untrained_emb, &knn_cfg(rank_k), None).map_err(&err)?;
            let d = RankDistances {
                trained: label_distance_by_rank(&nt, labels, &cfg.label_distance),
                untrained: label_distance_by_rank(&nu, labels, &cfg.label_distance),
                ideal: ideal_label_distance_by_rank(labels, &cfg.label_distance, rank_k),
            };
            let points = |v: &[f64]| -> Vec<(f64, f64)> {
                v.iter()
                    .enumerate()
                    .map(|(r, &y)| ((r + 1) as f64, y))
                    .collect()
            };
            let series = [
                Series {
                    name: "trained head".into(),
                    points: points(&d.trained),
                    colour: PALETTE[0],
                    faint: false,
                },
                Series {
                    name: "untrained head".into(),
                    points: points(&d.untrained),
                    colour: PALETTE[7],
                    faint: true,
                },
                Series {
                    name: "ideal (r-th nearest label)".into(),
                    points: points(&d.ideal),
                    colour: PALETTE[2],
                    faint: true,
                },
            ];
            let file = format!("{prefix}-label-distance-by-rank.svg");
            write_file(
                &out.join(&file),
                &plot::rank_distance_svg(
                    &format!("{}: retrieved label distance by rank", run.name),
                    &series,
                )?,
            )?;
            figures.push(file.clone());
            rank = Some(file);
            by_rank = Some(d);
        }
    }

    let mut grids = Vec::new();
    let paths = if let Some(p) = &run.test_paths {
        Some(p.clone())
    } else if shape.is_none() {
        image_paths(&run.config, n).unwrap_or_else(|w| {
            warnings.push(w);
            None
        })
    } else {
        None
    };
    if shape.is_some() || paths.is_some() {
        let random = seeded_queries(&eval_rows, opts.queries, opts.seed);
        let values: Vec<f64> = eval_rows
            .iter()
            .map(|r| per_query.get(r).copied().unwrap_or(f64::NAN))
            .collect();
        let worst = worst_queries(&eval_rows, &values, opts.queries);
        for (kind, qs, caption) in [
            (
                "random",
                &random,
                format!(
                    "{} random queries (seed {}) and their top {top_k}",
                    random.len(),
                    opts.seed
                ),
            ),
            (
                "worst",
                &worst,
                format!(
                    "the {} queries with the lowest per-query {metric_name} and their top {top_k}",
                    worst.len()
                ),
            ),
        ] {
            let file = format!("{prefix}-retrieval-{kind}.svg");
            let rows = grid_rows(run, &neigh, qs, &per_query, &metric_name);
            let title = format!("{}: {caption}", run.name);
            let svg = match (shape, &paths) {
                (Some(shape), _) => retrieval_grid_svg_with(
                    &title,
                    &GridImages::Pixels {
                        pixels: &run.test.features,
                        shape,
                    },
                    &rows,
                ),
                (None, Some(paths)) => {
                    let mut uris = BTreeMap::new();
                    for item in rows.iter().flat_map(|r| {
                        std::iter::once(r.query).chain(r.neighbours.iter().map(|c| c.item))
                    }) {
                        if uris.contains_key(&item) {
                            continue;
                        }
                        match grid::thumbnail_data_uri(&paths[item], THUMBNAIL_SIZE) {
                            Ok(uri) => {
                                uris.insert(item, uri);
                            }
                            Err(e) => warnings.push(format!("retrieval grid: {e}")),
                        }
                    }
                    retrieval_grid_svg_with(&title, &GridImages::Thumbnails(&uris), &rows)
                }
                (None, None) => unreachable!("grids are drawn only with pixels or image paths"),
            };
            write_file(&out.join(&file), &svg)?;
            figures.push(file.clone());
            grids.push((file, caption));
        }
    }

    let summary = RunSummary {
        name: run.name.clone(),
        dir: run.dir.clone(),
        loss: run.loss_name(),
        data_source: run.config.data.source.clone(),
        labels: match run.test.labels {
            Labels::Class(_) => "class",
            Labels::Continuous(_) => "continuous",
        },
        test_items: n,
        test_set: 0,
        epochs: run.history.len(),
        best_epoch: run.best_epoch,
        metrics,
        untrained_metrics,
        pair_similarity,
        label_distance_by_rank: by_rank,
        verification,
        figures,
        per_query: per_query_file,
    };
    Ok(Evaluated {
        summary,
        curves,
        histograms,
        grids,
        rank,
        verification: verification_figures,
        warnings,
    })
}

/// Renders the report of `runs` into `out` (created if needed): `index.html`, the figures and
/// `report.json`. Runs with the same folder name are told apart by a `#n` suffix.
pub fn render(
    runs: &[ReportRun],
    out: &Path,
    opts: &ReportOptions,
) -> Result<ReportFiles, ReportError> {
    if runs.is_empty() {
        return Err(ReportError::Options("no run folder given".into()));
    }
    if opts.queries == 0 {
        return Err(ReportError::Options("queries must be at least 1".into()));
    }
    if opts.top_k == 0 {
        return Err(ReportError::Options("top_k must be at least 1".into()));
    }
    if opts.rank_k == 0 {
        return Err(ReportError::Options("rank_k must be at least 1".into()));
    }
    if opts.histogram_bins == 0 || opts.max_histogram_items < 2 {
        return Err(ReportError::Options(
            "histogram_bins must be at least 1 and max_histogram_items at least 2".into(),
        ));
    }
    opts.bootstrap
        .validate()
        .map_err(|e| ReportError::Options(format!("bootstrap: {e}")))?;
    std::fs::create_dir_all(out).map_err(|e| ReportError::Io(format!("{}: {e}", out.display())))?;

    let mut evaluated = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        let mut e = evaluate_run(run, i, out, opts)?;
        if runs[..i].iter().any(|r| r.name == run.name) {
            e.summary.name = format!("{}#{}", run.name, i + 1);
        }
        evaluated.push(e);
    }

    // Test-set groups: runs whose evaluation data (features and labels) are identical and, for
    // continuous labels, whose label distance is the same, so that per-query values pair up.
    let mut group_of = vec![0usize; runs.len()];
    let mut leaders: Vec<usize> = Vec::new();
    for i in 0..runs.len() {
        let same = |j: usize| {
            runs[j].test == runs[i].test
                && runs[j].test_paths == runs[i].test_paths
                && runs[j].label_distance() == runs[i].label_distance()
        };
        match leaders.iter().position(|&l| same(l)) {
            Some(g) => group_of[i] = g,
            None => {
                group_of[i] = leaders.len();
                leaders.push(i);
            }
        }
        evaluated[i].summary.test_set = group_of[i];
    }

    let mut comparisons = Vec::new();
    for a in 0..runs.len() {
        for b in a + 1..runs.len() {
            if group_of[a] != group_of[b] {
                continue;
            }
            let (ea, eb) = (&runs[a].trained_embeddings, &runs[b].trained_embeddings);
            let names = format!(
                "{} vs {}",
                evaluated[a].summary.name, evaluated[b].summary.name
            );
            let err = eval_err(&names);
            let cmp = match &runs[a].test.labels {
                Labels::Class(labels) => compare_classes(
                    ea,
                    eb,
                    labels,
                    None,
                    &EvalConfig {
                        ks: runs[a].config.eval.ks.clone(),
                        bootstrap: Some(opts.bootstrap),
                        ..EvalConfig::default()
                    },
                ),
                Labels::Continuous(labels) => compare_continuous(
                    ea,
                    eb,
                    labels,
                    None,
                    &ContinuousConfig {
                        label_distance: runs[a].label_distance(),
                        bootstrap: Some(opts.bootstrap),
                        ..ContinuousConfig::default()
                    },
                ),
            }
            .map_err(&err)?;
            comparisons.push(ComparisonSummary {
                a: evaluated[a].summary.name.clone(),
                b: evaluated[b].summary.name.clone(),
                test_set: group_of[a],
                n_evaluated: cmp.n_evaluated,
                metrics: cmp.metrics,
            });
        }
    }

    let summary = ReportSummary {
        level: opts.bootstrap.level,
        resamples: opts.bootstrap.resamples,
        bootstrap_seed: opts.bootstrap.seed,
        seed: opts.seed,
        runs: evaluated.iter().map(|e| e.summary.clone()).collect(),
        comparisons,
    };
    let json_path = out.join("report.json");
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| ReportError::Io(format!("{}: {e}", json_path.display())))?;
    write_file(&json_path, &json)?;

    let html = page(&summary, &evaluated, leaders.len());
    let index = out.join("index.html");
    write_file(&index, &html)?;
    Ok(ReportFiles {
        index,
        json: json_path,
        figures: evaluated
            .iter()
            .flat_map(|e| e.summary.figures.iter().map(|f| out.join(f)))
            .collect(),
    })
}

const CSS: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 12px}\
h1{margin-bottom:4px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}\
table{border-collapse:collapse;margin:10px 0;font-size:13px}\
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}\
td.name,th.name{text-align:left}\
.ci{color:#666;font-size:11px}.untrained{color:#999;font-size:11px}\
.better{color:#1a7f37;font-weight:bold}.worse{color:#c62828;font-weight:bold}\
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}\
figcaption{font-size:13px;color:#555}.warn{color:#a15c00;font-size:13px}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}";

fn fmt_value(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_ci(ci: Option<(f64, f64)>) -> String {
    ci.map(|(a, b)| format!("[{}, {}]", fmt_value(a), fmt_value(b)))
        .unwrap_or_default()
}

fn figure(html: &mut String, file: &str, caption: &str) {
    let _ = writeln!(
        html,
        "<figure><a href=\"{f}\"><img src=\"{f}\" alt=\"{c}\"></a><figcaption>{c}</figcaption></figure>",
        f = escape(file),
        c = escape(caption)
    );
}

fn page(summary: &ReportSummary, evaluated: &[Evaluated], groups: usize) -> String {
    let level = format!("{:.0}%", summary.level * 100.0);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>simlearn report</title>\
         <style>{CSS}</style></head><body>\n<h1>simlearn report</h1>\n"
    );
    let _ = writeln!(
        h,
        "<p>{} run(s). Evaluation is leave-one-out on each run's test set (the validation data of its \
         config); intervals are {level} percentile bootstrap intervals over queries ({} resamples, seed {}). \
         Numbers: <a href=\"report.json\">report.json</a>.</p>",
        summary.runs.len(),
        summary.resamples,
        summary.bootstrap_seed
    );
    h.push_str("<section id=\"runs\"><h2>Runs</h2><table><tr><th class=\"name\">run</th><th class=\"name\">folder</th>\
                <th class=\"name\">loss</th><th class=\"name\">data</th><th>test items</th><th>test set</th>\
                <th>epochs</th><th>best epoch</th></tr>\n");
    for r in &summary.runs {
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td class=\"name\">{}</td><td class=\"name\">{} ({} labels)</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            escape(&r.dir.display().to_string()),
            escape(&r.loss),
            escape(&r.data_source),
            r.labels,
            r.test_items,
            r.test_set + 1,
            r.epochs,
            r.best_epoch.map(|e| (e + 1).to_string()).unwrap_or_else(|| "-".into())
        );
    }
    h.push_str("</table></section>\n");

    h.push_str("<section id=\"results\"><h2>Results</h2>\n");
    for g in 0..groups {
        let members: Vec<&RunSummary> = summary.runs.iter().filter(|r| r.test_set == g).collect();
        let Some(first) = members.first() else {
            continue;
        };
        let _ = write!(
            h,
            "<h3>Test set {} ({}, {} items, {} labels)</h3>\n<table><tr><th class=\"name\">metric</th>",
            g + 1,
            escape(&first.data_source),
            first.test_items,
            first.labels
        );
        for r in &members {
            let _ = write!(h, "<th>{}</th>", escape(&r.name));
        }
        h.push_str("</tr>\n");
        for m in &first.metrics {
            let _ = write!(h, "<tr><td class=\"name\">{}</td>", escape(&m.name));
            for r in &members {
                let cell = r.metrics.iter().find(|x| x.name == m.name);
                let before = r.untrained_metrics.iter().find(|x| x.name == m.name);
                match cell {
                    Some(c) => {
                        let _ = write!(
                            h,
                            "<td>{} <span class=\"ci\">{}</span><br><span class=\"untrained\">untrained {}</span></td>",
                            fmt_value(c.value),
                            fmt_ci(c.ci),
                            before.map(|b| fmt_value(b.value)).unwrap_or_else(|| "-".into())
                        );
                    }
                    None => h.push_str("<td>-</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
        if let Some(v) = &first.verification {
            for (name, _) in verification_rows(&v.trained) {
                let _ = write!(h, "<tr><td class=\"name\">{}</td>", escape(&name));
                for r in &members {
                    let find = |v: &Verification| {
                        verification_rows(v)
                            .into_iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, x)| x)
                    };
                    match &r.verification {
                        Some(rv) => {
                            let _ = write!(
                                h,
                                "<td>{}<br><span class=\"untrained\">untrained {}</span></td>",
                                find(&rv.trained)
                                    .map(fmt_value)
                                    .unwrap_or_else(|| "-".into()),
                                find(&rv.untrained)
                                    .map(fmt_value)
                                    .unwrap_or_else(|| "-".into())
                            );
                        }
                        None => h.push_str("<td>-</td>"),
                    }
                }
                h.push_str("</tr>\n");
            }
        }
        h.push_str("</table>\n");
        for c in summary.comparisons.iter().filter(|c| c.test_set == g) {
            let _ = write!(
                h,
                "<h4>Paired difference: {a} − {b} ({n} queries)</h4>\n<table class=\"comparison\"><tr>\
                 <th class=\"name\">metric</th><th>{a}</th><th>{b}</th><th>A − B</th><th>{level} interval of A − B</th>\
                 <th>sign flips</th></tr>\n",
                a = escape(&c.a),
                b = escape(&c.b),
                n = c.n_evaluated
            );
            for m in &c.metrics {
                // An interval that excludes 0 is a difference the test set resolves; distances
                // are better when lower.
                let lower_better = m.name.starts_with("mean_label_distance");
                let class = if m.ci.0 > 0.0 || m.ci.1 < 0.0 {
                    if (m.diff > 0.0) != lower_better {
                        " class=\"better\""
                    } else {
                        " class=\"worse\""
                    }
                } else {
                    ""
                };
                let _ = writeln!(
                    h,
                    "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td{class}>{:+.4}</td><td>{}</td><td>{:.3}</td></tr>",
                    escape(&m.name),
                    fmt_value(m.a),
                    fmt_value(m.b),
                    m.diff,
                    fmt_ci(Some(m.ci)),
                    m.sign_flip_fraction
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str(
        "<p class=\"ci\">Bold green/red: the interval of A − B excludes 0 and favours A/B \
         (lower is better for mean label distances).</p></section>\n",
    );

    h.push_str("<section id=\"training-curves\"><h2>Training curves</h2>\n");
    for e in evaluated {
        figure(
            &mut h,
            &e.curves,
            &format!(
                "{}: epoch means of the loss terms, learning rate, validation metrics",
                e.summary.name
            ),
        );
    }
    h.push_str("</section>\n");

    if evaluated.iter().any(|e| e.histograms.is_some()) {
        h.push_str("<section id=\"similarity-histograms\"><h2>Pair similarity</h2>\n<p>Cosine similarity of every \
                    positive (same class) and negative pair of the test set, before and after training; each bar is \
                    the share of its pairs.</p>\n");
        for e in evaluated {
            if let Some(f) = &e.histograms {
                figure(
                    &mut h,
                    f,
                    &format!("{}: untrained vs trained head", e.summary.name),
                );
            }
        }
        h.push_str("</section>\n");
    }

    if evaluated.iter().any(|e| !e.verification.is_empty()) {
        h.push_str("<section id=\"verification\"><h2>Verification</h2>\n<p>Every pair of test items is a \
                    same-class (genuine) or different-class (impostor) pair, accepted when its cosine similarity is at \
                    least a threshold. ROC: true accept rate against false accept rate; DET: false reject rate against \
                    false accept rate on a log axis. TAR@FAR, EER and ROC AUC are in the results table.</p>\n");
        for e in evaluated {
            for f in &e.verification {
                let kind = if f.ends_with("-roc.svg") {
                    "ROC"
                } else {
                    "DET"
                };
                figure(
                    &mut h,
                    f,
                    &format!("{}: {kind}, untrained vs trained head", e.summary.name),
                );
            }
        }
        h.push_str("</section>\n");
    }

    if evaluated.iter().any(|e| !e.grids.is_empty()) {
        let _ = write!(
            h,
            "<section id=\"retrieval\"><h2>Retrieval examples</h2>\n<p class=\"legend\">Trained head, leave-one-out. \
             Frames:<span style=\"background:{}\"></span>query<span style=\"background:{}\"></span>relevant \
             <span style=\"background:{}\"></span>not relevant. Relevant: same class, or (continuous labels) a \
             label distance within the query's ideal top-k.</p>\n",
            grid::QUERY_COLOUR,
            grid::CORRECT_COLOUR,
            grid::INCORRECT_COLOUR
        );
        for e in evaluated {
            for (f, caption) in &e.grids {
                figure(&mut h, f, &format!("{}: {caption}", e.summary.name));
            }
        }
        h.push_str("</section>\n");
    }

    if evaluated.iter().any(|e| e.rank.is_some()) {
        h.push_str("<section id=\"label-distance-by-rank\"><h2>Label distance by rank</h2>\n<p>Mean label distance \
                    between a query and its r-th retrieved item; the ideal curve is the r-th smallest label distance.</p>\n");
        for e in evaluated {
            if let Some(f) = &e.rank {
                figure(
                    &mut h,
                    f,
                    &format!("{}: mean label distance at rank r", e.summary.name),
                );
            }
        }
        h.push_str("</section>\n");
    }

    let warnings: Vec<String> = evaluated
        .iter()
        .flat_map(|e| {
            e.warnings
                .iter()
                .map(move |w| format!("{}: {w}", e.summary.name))
        })
        .collect();
    if !warnings.is_empty() {
        h.push_str("<section id=\"warnings\"><h2>Warnings</h2>\n");
        for w in warnings {
            let _ = writeln!(h, "<p class=\"warn\">{}</p>", escape(&w));
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}
