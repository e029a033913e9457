//! Evaluation reports: metric values with optional confidence intervals, the per-query
//! values behind them, warnings, and plain-text tables.

use crate::metrics::MapAtKDivisor;
use crate::stats::{BootstrapConfig, PairedDifference};
use crate::{LabelDistance, Similarity};
use serde::Serialize;
use std::fmt::Write as _;

/// One reported metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricValue {
    /// Metric name, e.g. `"map_at_r"`, `"recall_at_4"`, `"ndcg_at_10"`.
    pub name: String,
    /// The averaged value (class metrics are fractions in `[0, 1]`, not percentages).
    pub value: f64,
    /// Bootstrap percentile interval, when requested.
    pub ci: Option<(f64, f64)>,
}

/// How per-query values are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Averaging {
    /// Mean over queries (PML default).
    Micro,
    /// Mean over classes of the per-class mean (PML `avg_of_avgs=True`).
    Macro,
}

/// Per-query values of every per-query metric, for the queries that were evaluated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerQuery {
    pub(crate) names: Vec<String>,
    /// `values[m][i]`: metric `names[m]` of evaluated query `i`.
    pub(crate) values: Vec<Vec<f64>>,
    /// Index (row in the query matrix) of each evaluated query.
    pub(crate) queries: Vec<usize>,
}

impl PerQuery {
    pub(crate) fn get(&self, name: &str) -> Option<&[f64]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|m| self.values[m].as_slice())
    }
}

/// The per-class breakdown of a class report (`EvalConfig::per_class`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassRow {
    /// The class label.
    pub label: i64,
    /// Evaluated queries of this class.
    pub n_queries: usize,
    /// Mean of each per-query metric over this class's queries (no intervals).
    pub metrics: Vec<MetricValue>,
}

/// Result of [`crate::evaluate_classes`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    /// Query rows given.
    pub n_queries: usize,
    /// Queries that entered the averages (all minus excluded lone queries).
    pub n_evaluated: usize,
    /// Lone queries: no other gallery item shares their class (`R(q) = 0`). Excluded from
    /// the averages under PML's rule (`exclude_lone`), else counted with value 0.
    pub n_lone: usize,
    /// Gallery rows (the query rows themselves in leave-one-out mode).
    pub n_gallery: usize,
    /// Whether the gallery was the query set minus the query itself.
    pub leave_one_out: bool,
    /// Score used to rank the gallery.
    pub similarity: Similarity,
    /// The K values actually used (after clamping to the gallery size, deduplicated).
    pub ks: Vec<usize>,
    /// Depth of every retrieved list: `max(max ks, max R(q))`, clamped to the gallery.
    pub neighbours: usize,
    /// Divisor used for `map_at_{k}`.
    pub map_at_k_divisor: MapAtKDivisor,
    /// Micro (per query) or macro (per class) averaging.
    pub averaging: Averaging,
    /// Metric values, in a fixed order: `precision_at_1`, `recall_at_{k}`…, `r_precision`,
    /// `map_at_r`, `map_at_{k}`…, `mrr`, then `nmi`, `ami` when requested.
    pub metrics: Vec<MetricValue>,
    /// Per-class means, when `per_class` was requested (classes in ascending label order).
    pub per_class: Option<Vec<ClassRow>>,
    /// The bootstrap settings behind the intervals, if any.
    pub bootstrap: Option<BootstrapConfig>,
    /// Everything that was adjusted or may surprise (clamped k, …), one line each.
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub(crate) per_query: PerQuery,
}

fn find<'a>(metrics: &'a [MetricValue], name: &str) -> Option<&'a MetricValue> {
    metrics.iter().find(|m| m.name == name)
}

fn fmt_ci(ci: Option<(f64, f64)>) -> String {
    ci.map_or_else(|| "-".to_string(), |(a, b)| format!("[{a:.4}, {b:.4}]"))
}

fn metric_table(out: &mut String, metrics: &[MetricValue], level: Option<f64>) {
    let ci_head = level.map_or_else(|| "CI".to_string(), |l| format!("{:.0}% CI", l * 100.0));
    let w = metrics
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "| {:<w$} | {:>8} | {:<18} |",
        "metric", "value", ci_head
    );
    let _ = writeln!(out, "|{:-<w2$}|{:->10}|{:-<20}|", "", ":", "", w2 = w + 2);
    for m in metrics {
        let _ = writeln!(
            out,
            "| {:<w$} | {:>8.4} | {:<18} |",
            m.name,
            m.value,
            fmt_ci(m.ci)
        );
    }
}

fn warning_lines(out: &mut String, warnings: &[String]) {
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
}

impl ClassReport {
    /// Value of metric `name`, if reported.
    pub fn get(&self, name: &str) -> Option<f64> {
        find(&self.metrics, name).map(|m| m.value)
    }

    /// Confidence interval of metric `name`, if computed.
    pub fn ci(&self, name: &str) -> Option<(f64, f64)> {
        find(&self.metrics, name).and_then(|m| m.ci)
    }

    /// Per-query values of metric `name` (not `nmi`/`ami`), aligned with
    /// [`ClassReport::evaluated_queries`].
    pub fn per_query(&self, name: &str) -> Option<&[f64]> {
        self.per_query.get(name)
    }

    /// Rows (in the query matrix) of the evaluated queries, in the order of
    /// [`ClassReport::per_query`].
    pub fn evaluated_queries(&self) -> &[usize] {
        &self.per_query.queries
    }

    /// Names of the metrics that have per-query values.
    pub fn per_query_names(&self) -> &[String] {
        &self.per_query.names
    }

    /// A Markdown table of the metrics, preceded by the counts and followed by warnings.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "queries: {} ({} evaluated, {} lone{}), gallery: {}{}, similarity: {}, averaging: {}",
            self.n_queries,
            self.n_evaluated,
            self.n_lone,
            if self.n_lone > 0 && self.n_evaluated < self.n_queries {
                " excluded"
            } else {
                ""
            },
            self.n_gallery,
            if self.leave_one_out {
                " (leave-one-out)"
            } else {
                ""
            },
            self.similarity.name(),
            match self.averaging {
                Averaging::Micro => "micro (per query)",
                Averaging::Macro => "macro (per class)",
            }
        );
        metric_table(&mut out, &self.metrics, self.bootstrap.map(|b| b.level));
        warning_lines(&mut out, &self.warnings);
        out
    }
}

/// Result of [`crate::evaluate_continuous`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContinuousReport {
    /// Query rows.
    pub n_queries: usize,
    /// Gallery rows (the query rows themselves in leave-one-out mode).
    pub n_gallery: usize,
    /// Whether the gallery was the query set minus the query itself.
    pub leave_one_out: bool,
    /// Score used to rank the gallery.
    pub similarity: Similarity,
    /// Distance between label vectors.
    pub label_distance: LabelDistance,
    /// nDCG cut-offs actually used (clamped, deduplicated).
    pub ndcg_ks: Vec<usize>,
    /// Mean-label-distance cut-offs actually used (clamped, deduplicated).
    pub distance_ks: Vec<usize>,
    /// `ndcg_at_{k}`…, then `mean_label_distance_at_{k}`…
    pub metrics: Vec<MetricValue>,
    /// The bootstrap settings behind the intervals, if any.
    pub bootstrap: Option<BootstrapConfig>,
    /// Adjustments (clamped k, …), one line each.
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub(crate) per_query: PerQuery,
}

impl ContinuousReport {
    /// Value of metric `name`, if reported.
    pub fn get(&self, name: &str) -> Option<f64> {
        find(&self.metrics, name).map(|m| m.value)
    }

    /// Confidence interval of metric `name`, if computed.
    pub fn ci(&self, name: &str) -> Option<(f64, f64)> {
        find(&self.metrics, name).and_then(|m| m.ci)
    }

    /// Per-query values of metric `name`, one per query row.
    pub fn per_query(&self, name: &str) -> Option<&[f64]> {
        self.per_query.get(name)
    }

    /// Names of the metrics that have per-query values.
    pub fn per_query_names(&self) -> &[String] {
        &self.per_query.names
    }

    /// A Markdown table of the metrics, preceded by the counts and followed by warnings.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "queries: {}, gallery: {}{}, similarity: {}",
            self.n_queries,
            self.n_gallery,
            if self.leave_one_out {
                " (leave-one-out)"
            } else {
                ""
            },
            self.similarity.name()
        );
        metric_table(&mut out, &self.metrics, self.bootstrap.map(|b| b.level));
        warning_lines(&mut out, &self.warnings);
        out
    }
}

/// Result of [`crate::compare_classes`]: embedding sets A and B on the same queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Query rows.
    pub n_queries: usize,
    /// Queries in the paired averages (lone queries excluded under PML's rule).
    pub n_evaluated: usize,
    /// Lone queries (same for A and B: they depend on labels only).
    pub n_lone: usize,
    /// Micro or macro averaging.
    pub averaging: Averaging,
    /// The bootstrap settings behind the intervals.
    pub bootstrap: BootstrapConfig,
    /// One row per per-query metric.
    pub metrics: Vec<PairedDifference>,
    /// Adjustments (clamped k, …), one line each.
    pub warnings: Vec<String>,
}

impl Comparison {
    /// The comparison row of metric `name`.
    pub fn get(&self, name: &str) -> Option<&PairedDifference> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// A Markdown table: A, B, A − B with its interval and the sign-flip fraction.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "paired comparison on {} queries ({} evaluated, {} lone), {} resamples",
            self.n_queries, self.n_evaluated, self.n_lone, self.bootstrap.resamples
        );
        let w = self
            .metrics
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "| {:<w$} | {:>8} | {:>8} | {:>8} | {:<20} | {:>9} |",
            "metric",
            "A",
            "B",
            "A - B",
            format!("{:.0}% CI of A - B", self.bootstrap.level * 100.0),
            "sign flip"
        );
        let _ = writeln!(
            out,
            "|{:-<w2$}|{:->10}|{:->10}|{:->10}|{:-<22}|{:->11}|",
            "",
            ":",
            ":",
            ":",
            "",
            ":",
            w2 = w + 2
        );
        for m in &self.metrics {
            let _ = writeln!(
                out,
                "| {:<w$} | {:>8.4} | {:>8.4} | {:>+8.4} | {:<20} | {:>9.3} |",
                m.name,
                m.a,
                m.b,
                m.diff,
                fmt_ci(Some(m.ci)),
                m.sign_flip_fraction
            );
        }
        warning_lines(&mut out, &self.warnings);
        out
    }
}
