//! `simlearn calibrate`: open-set match thresholds for an index (TF-Similarity's `calibrate`).
//!
//! Every labelled calibration query is searched in the index (`Index::search`, k = 1, the
//! same search `simlearn search` and `serve` run). A query is a *match* at threshold `t` when
//! its top-1 score is `≥ t`, and a correct one when that neighbour has the query's label;
//! precision = correct matches / matches, recall = correct matches / queries
//! ([`simlearn_eval::verification::calibrate`]). The command prints the F1-optimal threshold
//! and, for each `--precision` target, the smallest threshold that reaches it, then stores the
//! `--rule`'s threshold in the index manifest (the index is rewritten atomically by
//! `Index::save`, checksums and all), so that `search` / `serve` mark each hit match / no
//! match.
//!
//! The calibration queries should be held out: a query that is itself in the index finds its
//! own copy with the top score and the right label, which inflates precision and recall.
//! Thresholds are top-1 scores as the index reports them (f32, "larger = closer"), written as
//! the shortest decimal between the f32 below and the score itself
//! ([`simlearn_eval::verification::f32_threshold_decimal`]): every f32 score is decided as in
//! the calibration, and the value survives the manifest's JSON round trip exactly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use simlearn_eval::io::{read_class_labels, read_embeddings};
use simlearn_eval::verification::{
    calibrate, f32_threshold_decimal, Calibration, CalibrationPoint, CalibrationRule,
};
use simlearn_index::{Index, Threshold};

/// Calibrate an index's match threshold from labelled, held-out queries.
#[derive(clap::Args)]
pub struct Args {
    /// Index folder (simlearn index build --labels …).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Calibration query vectors (.npy / .safetensors / .csv), one per row, held out from the
    /// index.
    #[arg(long, value_name = "FILE")]
    embeddings: PathBuf,
    /// Their integer class labels (.npy, or text with one integer per line), in the index's
    /// label space.
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Target precisions to report thresholds for, comma-separated.
    #[arg(
        long,
        value_name = "P,...",
        value_delimiter = ',',
        default_value = "0.9,0.95,0.99"
    )]
    precision: Vec<f64>,
    /// The threshold stored in the index: f1 (F1-optimal) or precision=P (the smallest
    /// threshold with precision ≥ P).
    #[arg(long, value_name = "RULE", default_value = "f1")]
    rule: String,
    /// Print the thresholds only; leave the index unchanged.
    #[arg(long)]
    dry_run: bool,
    /// Also write the whole calibration (every threshold's precision / recall / F1) as JSON.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Integer labels only: the index stores integers, and strings would be renumbered.
fn read_integer_labels(p: &Path) -> Result<Vec<i64>> {
    let is_npy = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if !t.is_empty() && t.parse::<i64>().is_err() {
                bail!(
                    "{}: line {}: {t:?} is not an integer; the index stores integer labels, so calibration labels must be integers of the same label space",
                    p.display(),
                    i + 1
                );
            }
        }
    }
    Ok(read_class_labels(p)?)
}

fn point_json(p: &CalibrationPoint) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}

pub fn run(args: Args) -> Result<()> {
    let rule = CalibrationRule::parse(&args.rule).context("--rule")?;
    for &p in &args.precision {
        if !(p > 0.0 && p <= 1.0) {
            bail!("--precision: {p} is not in (0, 1]");
        }
    }
    let mut index = Index::load(&args.index)?;
    let Some(index_labels) = index.labels() else {
        bail!(
            "{}: the index has no labels; calibration needs labelled items (index build --labels)",
            args.index.display()
        );
    };
    let n_index = index_labels.len();
    let q = read_embeddings(&args.embeddings, None)?;
    let labels = read_integer_labels(&args.labels)?;
    if labels.len() != q.rows() {
        bail!(
            "count mismatch: {} holds {} labels but {} has {} rows",
            args.labels.display(),
            labels.len(),
            args.embeddings.display(),
            q.rows()
        );
    }
    let hits = index
        .search(&q, 1)
        .with_context(|| args.embeddings.display().to_string())?;
    let mut scores = Vec::with_capacity(hits.len());
    let mut correct = Vec::with_capacity(hits.len());
    for (h, &l) in hits.iter().zip(&labels) {
        let top = h.first().context("the index returned no neighbour")?;
        scores.push(f64::from(top.score));
        correct.push(top.label == Some(l));
    }
    let mut cal: Calibration = calibrate(&scores, &correct, &args.precision)
        .with_context(|| args.embeddings.display().to_string())?;
    // Thresholds as short decimals that decide every f32 score as the raw top-1 scores do and
    // survive the manifest's JSON round trip exactly.
    cal.f1.threshold = f32_threshold_decimal(cal.f1.threshold);
    for p in cal.curve.iter_mut() {
        p.threshold = f32_threshold_decimal(p.threshold);
    }
    for t in cal.precision.iter_mut() {
        if let Some(p) = t.point.as_mut() {
            p.threshold = f32_threshold_decimal(p.threshold);
        }
    }
    let chosen = cal.select(&rule).context("--rule")?;

    let manifest = args.index.join(simlearn_index::artifact::MANIFEST);
    if !args.dry_run {
        index.set_threshold(Some(Threshold {
            score: chosen.threshold,
            rule: rule.name(),
            precision: chosen.precision,
            recall: chosen.recall,
            f1: chosen.f1,
        }));
        // The folder by its real path: `Index::save` swaps it by renaming siblings.
        let dir = std::fs::canonicalize(&args.index)
            .with_context(|| format!("{}: cannot resolve", args.index.display()))?;
        index.save(&dir)?;
    }
    let summary = serde_json::json!({
        "index": args.index,
        "index_items": n_index,
        "similarity": index.manifest().similarity,
        "queries": cal.n_queries,
        "top1_correct": cal.n_correct,
        "f1": point_json(&cal.f1),
        "precision": cal.precision,
        "rule": rule.name(),
        "chosen": point_json(&chosen),
        "written": !args.dry_run,
    });
    if let Some(p) = &args.out {
        let mut full = summary.clone();
        if let Some(o) = full.as_object_mut() {
            o.insert("curve".into(), serde_json::to_value(&cal.curve)?);
        }
        std::fs::write(p, serde_json::to_string_pretty(&full)? + "\n")
            .with_context(|| format!("--out {}: cannot write", p.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", cal.to_table());
        if args.dry_run {
            println!(
                "rule {}: threshold {} (dry run: the index is unchanged)",
                rule.name(),
                chosen.threshold
            );
        } else {
            println!(
                "rule {}: threshold {} written to {}",
                rule.name(),
                chosen.threshold,
                manifest.display()
            );
        }
    }
    Ok(())
}
