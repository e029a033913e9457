//! Entry points: embeddings (+ labels) in, report out.
//!
//! - [`evaluate_classes`]: class labels; P@1, Recall@K, R-precision, MAP@R, MAP@K, MRR
//!   (see [`crate::metrics`]), optional NMI/AMI ([`crate::cluster`]), optional bootstrap
//!   intervals ([`crate::stats`]).
//! - [`evaluate_continuous`]: vector labels; nDCG@K and mean label distance@K
//!   ([`crate::continuous`]).
//! - [`compare_classes`]: two embedding sets of the same queries, paired bootstrap.
//!
//! Retrieval is exact ([`crate::knn()`]), ties broken by the lower gallery index. With
//! `gallery = None` each query is searched among the other queries (leave-one-out,
//! PML's `ref_includes_query`), the query itself excluded by index.

use crate::cluster::cluster_scores;
use crate::continuous::{ideal_distances, mean_label_distance_at_k, ndcg_at_k};
use crate::knn::{knn, knn_leave_one_out, KnnConfig, Neighbours, Progress, Similarity};
use crate::metrics::{
    average_precision_at_k, average_precision_at_r, precision_at_1, r_precision, recall_at_k,
    reciprocal_rank, MapAtKDivisor,
};
use crate::report::{
    Averaging, ClassReport, ClassRow, Comparison, ContinuousReport, MetricValue, PerQuery,
};
use crate::stats::{average, bootstrap_ci, paired_bootstrap, BootstrapConfig, Grouping};
use crate::{EvalError, LabelDistance, Matrix};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// Settings of [`evaluate_classes`] and [`compare_classes`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Cut-offs for `recall_at_{k}` and `map_at_{k}` (default `[1, 2, 4, 8]`, the CUB/Cars
    /// convention of the DML literature).
    pub ks: Vec<usize>,
    /// Ranking score (default cosine, as PML's `AccuracyCalculator` on normalised
    /// embeddings).
    pub similarity: Similarity,
    /// Query rows per kNN tile (default 2048, see [`KnnConfig::block_rows`]).
    pub block_rows: usize,
    /// Macro averaging (mean over classes of the per-class mean, PML `avg_of_avgs`) plus a
    /// per-class table (default false: micro averaging over queries).
    pub per_class: bool,
    /// PML's lone-query rule: queries without any other gallery item of their class are
    /// left out of the averages (default true). When false they count with value 0.
    pub exclude_lone: bool,
    /// Also compute NMI and AMI of a seeded k-means++ clustering of the query embeddings
    /// (default false: costs `O(iterations · n · classes · d)`).
    pub nmi: bool,
    /// Bootstrap intervals for every per-query metric (default none).
    pub bootstrap: Option<BootstrapConfig>,
    /// Seed of the k-means initialisation (default 0).
    pub seed: u64,
    /// Divisor of MAP@K (default [`MapAtKDivisor::MinKR`]).
    pub map_at_k_divisor: MapAtKDivisor,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            ks: vec![1, 2, 4, 8],
            similarity: Similarity::Cosine,
            block_rows: KnnConfig::default().block_rows,
            per_class: false,
            exclude_lone: true,
            nmi: false,
            bootstrap: None,
            seed: 0,
            map_at_k_divisor: MapAtKDivisor::MinKR,
        }
    }
}

/// Settings of [`evaluate_continuous`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuousConfig {
    /// nDCG cut-offs (default 10, 20, …, 100: Kim et al. 2019, MPII protocol).
    pub ndcg_ks: Vec<usize>,
    /// Mean-label-distance cut-offs (default 1, 2, …, 10: same source).
    pub distance_ks: Vec<usize>,
    /// Ranking score (default squared Euclidean, as Kim et al. rank by squared Euclidean
    /// distance between raw embeddings).
    pub similarity: Similarity,
    /// Distance between label vectors (default Euclidean).
    pub label_distance: LabelDistance,
    /// Query rows per kNN tile (default 2048).
    pub block_rows: usize,
    /// Bootstrap intervals (default none).
    pub bootstrap: Option<BootstrapConfig>,
}

impl Default for ContinuousConfig {
    fn default() -> Self {
        Self {
            ndcg_ks: (1..=10).map(|i| 10 * i).collect(),
            distance_ks: (1..=10).collect(),
            similarity: Similarity::SqEuclidean,
            label_distance: LabelDistance::Euclidean,
            block_rows: KnnConfig::default().block_rows,
            bootstrap: None,
        }
    }
}

fn check_embeddings(m: &Matrix, what: &str) -> Result<(), EvalError> {
    if m.rows() == 0 {
        return Err(EvalError::Shape(format!("{what}: no rows")));
    }
    if m.cols() == 0 {
        return Err(EvalError::Shape(format!("{what}: dimension 0")));
    }
    if let Some(r) = m.first_non_finite_row() {
        return Err(EvalError::Invalid(format!(
            "{what}: row {r} holds a NaN or infinite value"
        )));
    }
    Ok(())
}

fn check_count(n_labels: usize, rows: usize, what: &str) -> Result<(), EvalError> {
    if n_labels != rows {
        return Err(EvalError::Shape(format!(
            "{what}: {n_labels} labels for {rows} embedding rows"
        )));
    }
    Ok(())
}

fn check_dims(q: &Matrix, g: &Matrix, what: &str) -> Result<(), EvalError> {
    if q.cols() != g.cols() {
        return Err(EvalError::Shape(format!(
            "{what}: query dimension {} differs from gallery dimension {}",
            q.cols(),
            g.cols()
        )));
    }
    Ok(())
}

/// Clamps every `k` of `ks` to `available` (with a warning), rejects `k = 0`, and
/// deduplicates while keeping the first occurrence's order.
fn clamp_ks(
    ks: &[usize],
    available: usize,
    param: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<usize>, EvalError> {
    let mut out: Vec<usize> = Vec::with_capacity(ks.len());
    for &k in ks {
        if k == 0 {
            return Err(EvalError::Invalid(format!(
                "{param}: k = 0 is not allowed (k ≥ 1)"
            )));
        }
        let c = k.min(available);
        if c < k {
            warnings.push(format!(
                "{param}: k = {k} exceeds the {available} retrievable gallery items; clamped to {c}"
            ));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn search(
    queries: &Matrix,
    gallery: Option<&Matrix>,
    k: usize,
    similarity: Similarity,
    block_rows: usize,
    progress: Progress<'_>,
) -> Result<Neighbours, EvalError> {
    let cfg = KnnConfig {
        k,
        similarity,
        block_rows,
    };
    match gallery {
        Some(g) => knn(queries, g, &cfg, progress),
        None => knn_leave_one_out(queries, &cfg, progress),
    }
}

/// Everything [`evaluate_classes`] and [`compare_classes`] share: per-query values of the
/// evaluated queries and their classes.
struct ClassEval {
    per_query: PerQuery,
    /// Dense class id (ascending label order) of each evaluated query.
    groups: Vec<usize>,
    /// Label of each dense class id.
    class_labels: Vec<i64>,
    n_lone: usize,
    n_gallery: usize,
    ks: Vec<usize>,
    depth: usize,
    warnings: Vec<String>,
}

impl ClassEval {
    fn grouping(&self, per_class: bool) -> Option<Grouping<'_>> {
        per_class.then(|| Grouping {
            ids: &self.groups,
            n_groups: self.class_labels.len(),
        })
    }
}

fn class_eval(
    queries: &Matrix,
    query_labels: &[i64],
    gallery: Option<(&Matrix, &[i64])>,
    cfg: &EvalConfig,
    progress: Progress<'_>,
) -> Result<ClassEval, EvalError> {
    check_embeddings(queries, "query embeddings")?;
    check_count(query_labels.len(), queries.rows(), "query labels")?;
    if let Some((g, gl)) = gallery {
        check_embeddings(g, "gallery embeddings")?;
        check_count(gl.len(), g.rows(), "gallery labels")?;
        check_dims(queries, g, "embeddings")?;
    }
    if let Some(b) = &cfg.bootstrap {
        b.validate()?;
    }
    let gallery_labels = gallery.map_or(query_labels, |(_, l)| l);
    let first = query_labels[0];
    if query_labels
        .iter()
        .chain(gallery_labels)
        .all(|&l| l == first)
    {
        return Err(EvalError::Invalid(format!(
            "all labels belong to the single class {first}; class retrieval metrics need at least two classes"
        )));
    }

    let loo = gallery.is_none();
    let n_gallery = gallery_labels.len();
    let available = if loo { n_gallery - 1 } else { n_gallery };
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for &l in gallery_labels {
        *counts.entry(l).or_insert(0) += 1;
    }
    // R(q): gallery items sharing the query's class, the query itself not counted.
    let r_of: Vec<usize> = query_labels
        .iter()
        .map(|l| {
            counts
                .get(l)
                .copied()
                .unwrap_or(0)
                .saturating_sub(usize::from(loo))
        })
        .collect();
    let n_lone = r_of.iter().filter(|&&r| r == 0).count();
    let evaluated: Vec<usize> = (0..queries.rows())
        .filter(|&q| !(cfg.exclude_lone && r_of[q] == 0))
        .collect();
    if evaluated.is_empty() {
        return Err(EvalError::Invalid(format!(
            "none of the {} queries has another gallery item of its class (all are lone queries)",
            queries.rows()
        )));
    }
    let mut warnings = Vec::new();
    let ks = clamp_ks(&cfg.ks, available, "ks", &mut warnings)?;
    let max_r = r_of.iter().copied().max().unwrap_or(0);
    // PML's 'max_bin_count' depth: enough for R-precision and MAP@R of every query.
    let depth = ks
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(max_r)
        .clamp(1, available);
    let nb = search(
        queries,
        gallery.map(|(g, _)| g),
        depth,
        cfg.similarity,
        cfg.block_rows,
        progress,
    )?;

    let mut names = vec!["precision_at_1".to_string()];
    names.extend(ks.iter().map(|k| format!("recall_at_{k}")));
    names.push("r_precision".into());
    names.push("map_at_r".into());
    names.extend(ks.iter().map(|k| format!("map_at_{k}")));
    names.push("mrr".into());

    let rows: Vec<Vec<f64>> = evaluated
        .par_iter()
        .map(|&q| {
            let (idx, _) = nb.row(q);
            let rel: Vec<bool> = idx
                .iter()
                .map(|&g| gallery_labels[g as usize] == query_labels[q])
                .collect();
            let r = r_of[q];
            let mut v = Vec::with_capacity(names.len());
            v.push(precision_at_1(&rel));
            v.extend(ks.iter().map(|&k| recall_at_k(&rel, k)));
            v.push(r_precision(&rel, r));
            v.push(average_precision_at_r(&rel, r));
            v.extend(
                ks.iter()
                    .map(|&k| average_precision_at_k(&rel, k, r, cfg.map_at_k_divisor)),
            );
            v.push(reciprocal_rank(&rel));
            v
        })
        .collect();
    let values: Vec<Vec<f64>> = (0..names.len())
        .map(|m| rows.iter().map(|row| row[m]).collect())
        .collect();

    let mut class_ids: BTreeMap<i64, usize> = BTreeMap::new();
    for &q in &evaluated {
        class_ids.insert(query_labels[q], 0);
    }
    for (i, v) in class_ids.values_mut().enumerate() {
        *v = i;
    }
    let groups = evaluated
        .iter()
        .map(|&q| class_ids[&query_labels[q]])
        .collect();
    Ok(ClassEval {
        per_query: PerQuery {
            names,
            values,
            queries: evaluated,
        },
        groups,
        class_labels: class_ids.into_keys().collect(),
        n_lone,
        n_gallery,
        ks,
        depth,
        warnings,
    })
}

/// Class-label retrieval evaluation (PML `AccuracyCalculator` conventions).
///
/// `gallery = None` evaluates leave-one-out on the queries. Every query retrieves
/// `max(max ks, max R(q))` neighbours (clamped to the gallery), enough for exact
/// R-precision and MAP@R; MRR looks at the same depth (PML with `k = "max_bin_count"`,
/// unless a larger K is requested). Errors (one line, naming the culprit): label count ≠
/// rows, empty or zero-dimensional sets, NaN/Inf rows, query/gallery dimensions that
/// differ, a single class, `k = 0`, bad bootstrap settings, or no non-lone query.
/// K values above the gallery size are clamped and reported in `warnings`.
pub fn evaluate_classes(
    queries: &Matrix,
    query_labels: &[i64],
    gallery: Option<(&Matrix, &[i64])>,
    cfg: &EvalConfig,
    progress: Progress<'_>,
) -> Result<ClassReport, EvalError> {
    let ev = class_eval(queries, query_labels, gallery, cfg, progress)?;
    let groups = ev.grouping(cfg.per_class);
    let series: Vec<&[f64]> = ev.per_query.values.iter().map(Vec::as_slice).collect();
    let cis = match &cfg.bootstrap {
        Some(b) => bootstrap_ci(&series, groups, b)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; series.len()],
    };
    let mut metrics: Vec<MetricValue> = ev
        .per_query
        .names
        .iter()
        .zip(&series)
        .zip(cis)
        .map(|((name, s), ci)| MetricValue {
            name: name.clone(),
            value: average(s, groups),
            ci,
        })
        .collect();
    if cfg.nmi {
        let (nmi, ami) = cluster_scores(queries, query_labels, cfg.seed)?;
        metrics.push(MetricValue {
            name: "nmi".into(),
            value: nmi,
            ci: None,
        });
        metrics.push(MetricValue {
            name: "ami".into(),
            value: ami,
            ci: None,
        });
    }
    let per_class = cfg.per_class.then(|| {
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); ev.class_labels.len()];
        for (i, &c) in ev.groups.iter().enumerate() {
            members[c].push(i);
        }
        ev.class_labels
            .iter()
            .zip(&members)
            .map(|(&label, members)| ClassRow {
                label,
                n_queries: members.len(),
                metrics: ev
                    .per_query
                    .names
                    .iter()
                    .zip(&series)
                    .map(|(name, s)| MetricValue {
                        name: name.clone(),
                        value: members.iter().map(|&i| s[i]).sum::<f64>() / members.len() as f64,
                        ci: None,
                    })
                    .collect(),
            })
            .collect()
    });
    Ok(ClassReport {
        n_queries: queries.rows(),
        n_evaluated: ev.per_query.queries.len(),
        n_lone: ev.n_lone,
        n_gallery: ev.n_gallery,
        leave_one_out: gallery.is_none(),
        similarity: cfg.similarity,
        ks: ev.ks,
        neighbours: ev.depth,
        map_at_k_divisor: cfg.map_at_k_divisor,
        averaging: if cfg.per_class {
            Averaging::Macro
        } else {
            Averaging::Micro
        },
        metrics,
        per_class,
        bootstrap: cfg.bootstrap,
        warnings: ev.warnings,
        per_query: ev.per_query,
    })
}

/// Paired comparison of two embedding sets `a` and `b` of the same queries (same rows,
/// same `labels`): for every per-query class metric, `mean(A) − mean(B)` with its paired
/// percentile bootstrap interval (the same resampled queries for A and B) and the
/// fraction of resamples in which the sign of the difference flips. `gallery` holds the
/// gallery embedded by A, the gallery embedded by B, and the gallery labels; `None`
/// compares leave-one-out evaluations. Uses `cfg.bootstrap`, or
/// [`BootstrapConfig::default`] when that is `None`.
pub fn compare_classes(
    a: &Matrix,
    b: &Matrix,
    labels: &[i64],
    gallery: Option<(&Matrix, &Matrix, &[i64])>,
    cfg: &EvalConfig,
) -> Result<Comparison, EvalError> {
    check_paired_rows(a, b)?;
    let boot = cfg.bootstrap.unwrap_or_default();
    boot.validate()?;
    let ea = class_eval(a, labels, gallery.map(|(ga, _, l)| (ga, l)), cfg, None)
        .map_err(|e| prefix(e, "embedding set A: "))?;
    let eb = class_eval(b, labels, gallery.map(|(_, gb, l)| (gb, l)), cfg, None)
        .map_err(|e| prefix(e, "embedding set B: "))?;
    // Lone queries and R(q) depend on labels only, so A and B evaluate the same queries.
    debug_assert_eq!(ea.per_query.queries, eb.per_query.queries);
    let groups = ea.grouping(cfg.per_class);
    let sa: Vec<&[f64]> = ea.per_query.values.iter().map(Vec::as_slice).collect();
    let sb: Vec<&[f64]> = eb.per_query.values.iter().map(Vec::as_slice).collect();
    let metrics = paired_bootstrap(&ea.per_query.names, &sa, &sb, groups, &boot)?;
    let warnings = merge_warnings(ea.warnings.clone(), eb.warnings);
    Ok(Comparison {
        n_queries: a.rows(),
        n_evaluated: ea.per_query.queries.len(),
        n_lone: ea.n_lone,
        averaging: if cfg.per_class {
            Averaging::Macro
        } else {
            Averaging::Micro
        },
        bootstrap: boot,
        metrics,
        warnings,
    })
}

/// A paired comparison needs the same query rows in both embedding sets.
fn check_paired_rows(a: &Matrix, b: &Matrix) -> Result<(), EvalError> {
    if a.rows() != b.rows() {
        return Err(EvalError::Shape(format!(
            "paired comparison: embedding set A has {} query rows, B has {}",
            a.rows(),
            b.rows()
        )));
    }
    Ok(())
}

/// The warnings of A followed by those of B that A does not already have.
fn merge_warnings(mut warnings: Vec<String>, other: Vec<String>) -> Vec<String> {
    for w in other {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    warnings
}

fn prefix(e: EvalError, p: &str) -> EvalError {
    match e {
        EvalError::Shape(m) => EvalError::Shape(format!("{p}{m}")),
        EvalError::Invalid(m) => EvalError::Invalid(format!("{p}{m}")),
        other => other,
    }
}

/// Continuous-label retrieval evaluation (Kim et al. 2019): `ndcg_at_{k}` and
/// `mean_label_distance_at_{k}` (see [`crate::continuous`]), averaged over all queries.
///
/// `query_labels` / gallery labels are label vectors, one row per embedding row.
/// `gallery = None` evaluates leave-one-out (the query is excluded from both the
/// embedding ranking and the ideal ranking). Errors: label rows ≠ embedding rows, label
/// dimensions that differ, NaN/Inf rows (embeddings or labels), empty sets, `k = 0`, no
/// cut-off at all. Cut-offs above the gallery size are clamped (see `warnings`).
pub fn evaluate_continuous(
    queries: &Matrix,
    query_labels: &Matrix,
    gallery: Option<(&Matrix, &Matrix)>,
    cfg: &ContinuousConfig,
    progress: Progress<'_>,
) -> Result<ContinuousReport, EvalError> {
    let ev = continuous_eval(queries, query_labels, gallery, cfg, progress)?;
    let series: Vec<&[f64]> = ev.per_query.values.iter().map(Vec::as_slice).collect();
    let cis = match &cfg.bootstrap {
        Some(b) => bootstrap_ci(&series, None, b)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; series.len()],
    };
    let metrics = ev
        .per_query
        .names
        .iter()
        .zip(&series)
        .zip(cis)
        .map(|((name, s), ci)| MetricValue {
            name: name.clone(),
            value: average(s, None),
            ci,
        })
        .collect();
    Ok(ContinuousReport {
        n_queries: queries.rows(),
        n_gallery: ev.n_gallery,
        leave_one_out: gallery.is_none(),
        similarity: cfg.similarity,
        label_distance: cfg.label_distance,
        ndcg_ks: ev.ndcg_ks,
        distance_ks: ev.distance_ks,
        metrics,
        bootstrap: cfg.bootstrap,
        warnings: ev.warnings,
        per_query: ev.per_query,
    })
}

/// Per-query continuous-label values shared by [`evaluate_continuous`] and
/// [`compare_continuous`].
struct ContinuousEval {
    per_query: PerQuery,
    n_gallery: usize,
    ndcg_ks: Vec<usize>,
    distance_ks: Vec<usize>,
    warnings: Vec<String>,
}

fn continuous_eval(
    queries: &Matrix,
    query_labels: &Matrix,
    gallery: Option<(&Matrix, &Matrix)>,
    cfg: &ContinuousConfig,
    progress: Progress<'_>,
) -> Result<ContinuousEval, EvalError> {
    check_embeddings(queries, "query embeddings")?;
    check_embeddings(query_labels, "query labels")?;
    check_count(query_labels.rows(), queries.rows(), "query labels")?;
    if let Some((g, gl)) = gallery {
        check_embeddings(g, "gallery embeddings")?;
        check_embeddings(gl, "gallery labels")?;
        check_count(gl.rows(), g.rows(), "gallery labels")?;
        check_dims(queries, g, "embeddings")?;
        if gl.cols() != query_labels.cols() {
            return Err(EvalError::Shape(format!(
                "labels: query label dimension {} differs from gallery label dimension {}",
                query_labels.cols(),
                gl.cols()
            )));
        }
    }
    if let Some(b) = &cfg.bootstrap {
        b.validate()?;
    }
    if cfg.ndcg_ks.is_empty() && cfg.distance_ks.is_empty() {
        return Err(EvalError::Invalid(
            "ndcg_ks and distance_ks are both empty: nothing to evaluate".into(),
        ));
    }
    let loo = gallery.is_none();
    let gallery_labels = gallery.map_or(query_labels, |(_, l)| l);
    let n_gallery = gallery_labels.rows();
    let available = if loo { n_gallery - 1 } else { n_gallery };
    if available == 0 {
        return Err(EvalError::Shape(
            "leave-one-out evaluation needs at least 2 query rows".into(),
        ));
    }
    let mut warnings = Vec::new();
    let ndcg_ks = clamp_ks(&cfg.ndcg_ks, available, "ndcg_ks", &mut warnings)?;
    let distance_ks = clamp_ks(&cfg.distance_ks, available, "distance_ks", &mut warnings)?;
    let depth = ndcg_ks
        .iter()
        .chain(&distance_ks)
        .copied()
        .max()
        .unwrap_or(1);
    let max_ndcg = ndcg_ks.iter().copied().max().unwrap_or(0);
    let nb = search(
        queries,
        gallery.map(|(g, _)| g),
        depth,
        cfg.similarity,
        cfg.block_rows,
        progress,
    )?;

    let mut names: Vec<String> = ndcg_ks.iter().map(|k| format!("ndcg_at_{k}")).collect();
    names.extend(
        distance_ks
            .iter()
            .map(|k| format!("mean_label_distance_at_{k}")),
    );
    let dist = cfg.label_distance;
    let rows: Vec<Vec<f64>> = (0..queries.rows())
        .into_par_iter()
        .map(|q| {
            let ql = query_labels.row(q);
            let (idx, _) = nb.row(q);
            let retrieved: Vec<f64> = idx
                .iter()
                .map(|&g| dist.dist(ql, gallery_labels.row(g as usize)))
                .collect();
            let ideal = if max_ndcg > 0 {
                ideal_distances(ql, gallery_labels, loo.then_some(q), max_ndcg, &dist)
            } else {
                Vec::new()
            };
            let mut v: Vec<f64> = ndcg_ks
                .iter()
                .map(|&k| ndcg_at_k(&retrieved, &ideal, k))
                .collect();
            v.extend(
                distance_ks
                    .iter()
                    .map(|&k| mean_label_distance_at_k(&retrieved, k)),
            );
            v
        })
        .collect();
    let values: Vec<Vec<f64>> = (0..names.len())
        .map(|m| rows.iter().map(|row| row[m]).collect())
        .collect();
    Ok(ContinuousEval {
        per_query: PerQuery {
            names,
            values,
            queries: (0..queries.rows()).collect(),
        },
        n_gallery,
        ndcg_ks,
        distance_ks,
        warnings,
    })
}

/// Paired comparison of two embedding sets `a` and `b` of the same queries with vector
/// labels: for every `ndcg_at_{k}` and `mean_label_distance_at_{k}`, `mean(A) − mean(B)`
/// with its paired percentile bootstrap interval and sign-flip fraction (see
/// [`compare_classes`]). `gallery` holds the gallery embedded by A, by B, and the gallery
/// labels; `None` compares leave-one-out evaluations. Uses `cfg.bootstrap`, or
/// [`BootstrapConfig::default`] when that is `None`. For distances, lower is better, so
/// a negative difference favours A.
pub fn compare_continuous(
    a: &Matrix,
    b: &Matrix,
    labels: &Matrix,
    gallery: Option<(&Matrix, &Matrix, &Matrix)>,
    cfg: &ContinuousConfig,
) -> Result<Comparison, EvalError> {
    check_paired_rows(a, b)?;
    let boot = cfg.bootstrap.unwrap_or_default();
    boot.validate()?;
    let ea = continuous_eval(a, labels, gallery.map(|(ga, _, l)| (ga, l)), cfg, None)
        .map_err(|e| prefix(e, "embedding set A: "))?;
    let eb = continuous_eval(b, labels, gallery.map(|(_, gb, l)| (gb, l)), cfg, None)
        .map_err(|e| prefix(e, "embedding set B: "))?;
    let sa: Vec<&[f64]> = ea.per_query.values.iter().map(Vec::as_slice).collect();
    let sb: Vec<&[f64]> = eb.per_query.values.iter().map(Vec::as_slice).collect();
    let metrics = paired_bootstrap(&ea.per_query.names, &sa, &sb, None, &boot)?;
    let warnings = merge_warnings(ea.warnings.clone(), eb.warnings);
    Ok(Comparison {
        n_queries: a.rows(),
        n_evaluated: a.rows(),
        n_lone: 0,
        averaging: Averaging::Micro,
        bootstrap: boot,
        metrics,
        warnings,
    })
}
