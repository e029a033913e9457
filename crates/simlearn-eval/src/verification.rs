//! Verification (same / different?) metrics and open-set calibration.
//!
//! # Pairs
//!
//! A *genuine* pair is two items of the same class, an *impostor* pair two items of different
//! classes. Without a gallery every unordered pair `i < j` of the evaluation set is one pair
//! (each pair once, an item never with itself: the leave-one-out set of `simlearn eval`); with a
//! gallery every query × gallery pair is one pair. Scores are "larger = closer"
//! ([`Similarity`]: cosine, dot, or `−‖a − b‖²`).
//!
//! # Decision rule and curves
//!
//! A pair is *accepted* at threshold `t` when its score is `≥ t`: ties at the threshold are
//! accepted, everywhere in this module and in the index's match decision.
//!
//! * `TAR(t) = #{genuine ≥ t} / G`, `FAR(t) = #{impostor ≥ t} / I`, `FRR(t) = 1 − TAR(t)`.
//! * The ROC curve is `(FAR(t), TAR(t))` at every distinct score `t` (ascending, from
//!   `FAR = TAR = 1` at the smallest score); accepting nothing (`FAR = TAR = 0`) is implied.
//!   The stored curve is thinned (see [`VerificationConfig::curve_step`]); every summary
//!   number below is computed on the full curve.
//! * The DET curve is `(FAR, FRR)` at the same thresholds.
//! * **TAR@FAR `f`**: the largest `TAR(t)` among thresholds with `FAR(t) ≤ f` (`FAR` as the
//!   f64 quotient of the counts). With `m` the largest count with `m / I ≤ f` and `v` the
//!   `(m+1)`-th largest impostor score, that is `#{genuine > v} / G`, reached at the smallest
//!   genuine score above `v` (the reported threshold; when no genuine score exceeds `v`, TAR is
//!   0 and the threshold is the next f64 above `v`). With `m ≥ I` every pair is accepted.
//! * **EER**: with `D(t) = FAR(t) − FRR(t)` (non-increasing in `t`), let `t_a` be the largest
//!   distinct score with `D ≥ 0` and `t_b` the next one (or "accept nothing", where
//!   `FAR = 0, FRR = 1`). The EER is where the straight line between the two points crosses
//!   `FAR = FRR`: `λ = D_a / (D_a − D_b)`, `EER = FAR_a + λ (FAR_b − FAR_a)`, and its threshold
//!   `t_a + λ (t_b − t_a)` (`t_a` when `t_b` is "accept nothing").
//! * **ROC AUC**: the Mann–Whitney statistic `P(g > i) + ½ P(g = i)` over all genuine ×
//!   impostor pairs, i.e. the area under the ROC drawn with straight lines.
//!
//! # Exact and histogram paths, memory
//!
//! Genuine pairs are usually few (`Σ class size² / 2`) and are kept as exact f64 scores
//! ([`crate::knn::exact_score`]), 8 bytes each, up to
//! [`VerificationConfig::exact_max_genuine`] (default 2²³) of them. Impostor pairs are kept
//! exactly the same way while the total number of pairs is at most
//! [`VerificationConfig::exact_max_pairs`] (default 2²¹). Beyond that (60k SOP items hold
//! 1.8·10⁹ pairs) the Gram matrix is streamed in f32 GEMM tiles of `block_rows²` scores and each
//! impostor score is counted in one of [`VerificationConfig::bins`] (default 2²⁰) equal bins over
//! the score range (cosine `[−1, 1]`; dot `[−M², M²]`; squared Euclidean `[−4M², 0]`, `M` the
//! largest row norm), and so are the genuine scores when there are more than
//! `exact_max_genuine` of them (a few huge classes): memory is `threads × bins × 8` bytes (twice
//! that with genuine bins) plus the tiles, independent of the pair count.
//!
//! **Resolution of the histogram path.** Each impostor score is rounded *up* to the upper edge
//! of its bin and the exact algorithm runs on those values. Rounding up never lowers a score,
//! so the reported FAR never understates the true one: with bin width `w`,
//! `FAR(t) ≤ FAR_hist(t) ≤ FAR(t − w)`. Hence TAR@FAR is conservative, short of the exact value
//! by at most the share of genuine scores within `w` above the exact threshold, the EER
//! threshold moves by at most `w`, and the AUC changes by at most the share of genuine ×
//! impostor pairs whose scores differ by less than `w`. On top of `w`, the f32 GEMM score of an
//! impostor differs from the f64 one by at most `2(2d + 16)·2⁻²⁴` (the bound [`mod@crate::knn`]'s
//! filter uses; cosine, scaled by the norms otherwise), about 10⁻⁷ in practice. `w` is reported as `impostor_bin_width` (cosine:
//! 1.9·10⁻⁶); `None` means the exact path. Binned genuine scores are rounded *down* to the
//! lower edge of their bin (`genuine_bin_width`), so TAR is never overstated either:
//! `TAR(t + w) ≤ TAR_hist(t) ≤ TAR(t)`, and the bounds above widen to `2w`.
//!
//! # Open-set calibration ([`calibrate`])
//!
//! TF-Similarity's `calibrate` semantics: each labelled query has its top-1 neighbour's score
//! and whether that neighbour's label is the query's. At threshold `t` a query is *accepted*
//! (a "match") when its top-1 score is `≥ t`; precision = correct accepted / accepted, recall =
//! correct accepted / all queries, F1 their harmonic mean (0 when both are 0). The curve has one
//! point per distinct top-1 score. The F1-optimal threshold is the one with the largest F1
//! (ties: the larger threshold, i.e. fewer matches). For a target precision `p` the chosen
//! threshold is the smallest one whose precision is `≥ p` (most recall at that precision);
//! precision is not monotone in `t`, so every threshold is checked.

use crate::knn::exact_score;
use crate::{EvalError, Matrix, Similarity};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// FAR targets reported by default.
pub const FAR_TARGETS: [f64; 4] = [1e-1, 1e-2, 1e-3, 1e-4];

/// Settings of [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationConfig {
    /// Pair score (default cosine).
    pub similarity: Similarity,
    /// FAR targets of the TAR@FAR rows (default [`FAR_TARGETS`]).
    pub far_targets: Vec<f64>,
    /// Largest number of pairs whose impostor scores are all kept exactly (default 2²¹:
    /// about 2,000 items leave-one-out); more pairs use the histogram path.
    pub exact_max_pairs: u64,
    /// Largest number of genuine pairs kept exactly on the histogram path (default 2²³,
    /// 64 MiB); more are binned too.
    pub exact_max_genuine: u64,
    /// Bins of the impostor histogram (default 2²⁰).
    pub bins: usize,
    /// Rows per GEMM tile of the histogram path (default 1024).
    pub block_rows: usize,
    /// Thinning of the stored curve: a point is kept when FAR or TAR moved by at least this
    /// much, or `log10 FAR` by at least 5 × this, since the last kept point (default 10⁻³;
    /// 0 keeps every point). The first and last points are always kept.
    pub curve_step: f64,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            similarity: Similarity::Cosine,
            far_targets: FAR_TARGETS.to_vec(),
            exact_max_pairs: 1 << 21,
            exact_max_genuine: 1 << 23,
            bins: 1 << 20,
            block_rows: 1024,
            curve_step: 1e-3,
        }
    }
}

/// One point of the ROC / DET curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// Accept pairs with score `≥ threshold`.
    pub threshold: f64,
    /// False accept rate.
    pub far: f64,
    /// True accept rate (`1 − FRR`).
    pub tar: f64,
    /// Genuine pairs accepted.
    pub genuine_accepted: u64,
    /// Impostor pairs accepted.
    pub impostor_accepted: u64,
}

impl RocPoint {
    /// False reject rate `1 − TAR`.
    pub fn frr(&self) -> f64 {
        1.0 - self.tar
    }
}

/// TAR at one FAR target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TarAtFar {
    /// The FAR target.
    pub far_target: f64,
    /// The largest TAR with FAR ≤ target.
    pub tar: f64,
    /// FAR at the reported threshold (≤ target).
    pub far: f64,
    /// Accept pairs with score `≥ threshold`.
    pub threshold: f64,
}

impl TarAtFar {
    /// The metric name, e.g. `tar_at_far_1e-3`.
    pub fn name(&self) -> String {
        format!("tar_at_far_{:e}", self.far_target)
    }
}

/// Which pairs were scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairSet {
    /// Every unordered pair `i < j` of one set.
    AllPairs,
    /// Every query × gallery pair.
    QueryGallery,
    /// Scores given directly ([`verification_from_scores`]).
    Given,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Which pairs were scored.
    pub pairs: PairSet,
    /// Pair score.
    pub similarity: Similarity,
    /// Same-class pairs.
    pub genuine_pairs: u64,
    /// Different-class pairs.
    pub impostor_pairs: u64,
    /// Width of the impostor histogram bins; `None`: every impostor score exact.
    pub impostor_bin_width: Option<f64>,
    /// Width of the genuine histogram bins; `None`: every genuine score exact.
    pub genuine_bin_width: Option<f64>,
    /// One row per FAR target, in the order given.
    pub tar_at_far: Vec<TarAtFar>,
    /// Equal error rate (interpolated, see the module docs).
    pub eer: f64,
    /// Threshold of the EER.
    pub eer_threshold: f64,
    /// Area under the ROC curve.
    pub roc_auc: f64,
    /// The (thinned) ROC curve, thresholds ascending; not serialised (see [`Self::roc_csv`]).
    #[serde(skip)]
    pub roc: Vec<RocPoint>,
}

impl Verification {
    /// TAR at FAR target `far`, when it was requested.
    pub fn tar_at(&self, far: f64) -> Option<f64> {
        self.tar_at_far
            .iter()
            .find(|t| t.far_target == far)
            .map(|t| t.tar)
    }

    /// DET points `(FAR, FRR)`, thresholds ascending.
    pub fn det(&self) -> Vec<(f64, f64)> {
        self.roc.iter().map(|p| (p.far, p.frr())).collect()
    }

    /// The curve as CSV: `threshold,far,tar,frr`, one line per point.
    pub fn roc_csv(&self) -> String {
        let mut s = String::from("threshold,far,tar,frr\n");
        for p in &self.roc {
            let _ = writeln!(s, "{},{},{},{}", p.threshold, p.far, p.tar, p.frr());
        }
        s
    }

    /// A Markdown table: TAR@FAR rows, EER, ROC AUC.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "verification: {} genuine, {} impostor pairs ({}), {}, similarity: {}",
            self.genuine_pairs,
            self.impostor_pairs,
            match self.pairs {
                PairSet::AllPairs => "all pairs i < j",
                PairSet::QueryGallery => "query × gallery",
                PairSet::Given => "given scores",
            },
            match (self.impostor_bin_width, self.genuine_bin_width) {
                (None, _) => "exact".to_string(),
                (Some(w), None) => format!("impostor scores binned, width {w:.2e}"),
                (Some(w), Some(_)) => format!("all scores binned, width {w:.2e}"),
            },
            self.similarity.name()
        );
        let _ = writeln!(
            out,
            "| {:<16} | {:>8} | {:>12} | {:>10} |",
            "metric", "value", "threshold", "far"
        );
        let _ = writeln!(out, "|{:-<18}|{:->10}|{:->14}|{:->12}|", "", ":", ":", ":");
        for t in &self.tar_at_far {
            let _ = writeln!(
                out,
                "| {:<16} | {:>8.4} | {:>12.6} | {:>10.3e} |",
                t.name(),
                t.tar,
                t.threshold,
                t.far
            );
        }
        let _ = writeln!(
            out,
            "| {:<16} | {:>8.4} | {:>12.6} | {:>10.3e} |",
            "eer", self.eer, self.eer_threshold, self.eer
        );
        let _ = writeln!(
            out,
            "| {:<16} | {:>8.4} | {:>12} | {:>10} |",
            "roc_auc", self.roc_auc, "-", "-"
        );
        out
    }
}

fn check_config(cfg: &VerificationConfig) -> Result<(), EvalError> {
    for &f in &cfg.far_targets {
        if !(f > 0.0 && f <= 1.0) {
            return Err(EvalError::Invalid(format!(
                "far_targets: {f} is not in (0, 1]"
            )));
        }
    }
    if cfg.bins < 2 {
        return Err(EvalError::Invalid("bins must be at least 2".into()));
    }
    if cfg.block_rows == 0 {
        return Err(EvalError::Invalid("block_rows must be at least 1".into()));
    }
    if !(cfg.curve_step >= 0.0 && cfg.curve_step.is_finite()) {
        return Err(EvalError::Invalid(format!(
            "curve_step: {} must be finite and ≥ 0",
            cfg.curve_step
        )));
    }
    Ok(())
}

/// Exact verification metrics of given genuine and impostor scores (see the module docs).
/// Errors: a NaN score, no genuine or no impostor score, a FAR target outside `(0, 1]`.
pub fn verification_from_scores(
    genuine: &[f64],
    impostor: &[f64],
    cfg: &VerificationConfig,
) -> Result<Verification, EvalError> {
    check_config(cfg)?;
    for (what, v) in [("genuine", genuine), ("impostor", impostor)] {
        if let Some(i) = v.iter().position(|x| x.is_nan()) {
            return Err(EvalError::Invalid(format!("{what} score {i} is NaN")));
        }
    }
    let mut g = genuine.to_vec();
    g.sort_by(f64::total_cmp);
    let mut i = impostor.to_vec();
    i.sort_by(f64::total_cmp);
    analyse(atoms(&g), atoms(&i), (None, None), PairSet::Given, cfg)
}

/// Distinct values of ascending `v` with their multiplicities.
fn atoms(v: &[f64]) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for &x in v {
        match out.last_mut() {
            Some((y, c)) if *y == x => *c += 1,
            _ => out.push((x, 1)),
        }
    }
    out
}

/// The next f64 above `x` (finite `x`).
fn next_above(x: f64) -> f64 {
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

/// Every summary of the ascending genuine and impostor atoms (distinct value, count);
/// `bin_widths` is `(impostor, genuine)`.
fn analyse(
    genuine: Vec<(f64, u64)>,
    imp: Vec<(f64, u64)>,
    bin_widths: (Option<f64>, Option<f64>),
    pairs: PairSet,
    cfg: &VerificationConfig,
) -> Result<Verification, EvalError> {
    let g_n: u64 = genuine.iter().map(|a| a.1).sum();
    let i_n: u64 = imp.iter().map(|a| a.1).sum();
    if g_n == 0 {
        return Err(EvalError::Invalid(
            "no genuine (same-class) pairs: every class has a single item, so TAR is undefined"
                .into(),
        ));
    }
    if i_n == 0 {
        return Err(EvalError::Invalid(
            "no impostor (different-class) pairs: all items belong to one class, so FAR is undefined"
                .into(),
        ));
    }
    let (gf, i_f) = (g_n as f64, i_n as f64);

    // TAR@FAR: m = the most impostors a threshold may accept; v = the (m+1)-th largest
    // impostor score.
    let mut tar_at_far = Vec::with_capacity(cfg.far_targets.len());
    for &f in &cfg.far_targets {
        let mut m = ((f * i_f).floor() as u64).min(i_n);
        while m < i_n && ((m + 1) as f64 / i_f) <= f {
            m += 1;
        }
        while m > 0 && (m as f64 / i_f) > f {
            m -= 1;
        }
        let row = if m >= i_n {
            let lowest = genuine[0].0.min(imp[0].0);
            TarAtFar {
                far_target: f,
                tar: 1.0,
                far: 1.0,
                threshold: lowest,
            }
        } else {
            let mut above = 0u64;
            let mut v = imp[0].0;
            for &(x, c) in imp.iter().rev() {
                if above + c > m {
                    v = x;
                    break;
                }
                above += c;
            }
            let first_g = genuine.partition_point(|a| a.0 <= v);
            let threshold = genuine
                .get(first_g)
                .map(|a| a.0)
                .unwrap_or_else(|| next_above(v));
            let accepted_gen: u64 = genuine[first_g..].iter().map(|a| a.1).sum();
            let accepted_imp: u64 = imp[imp.partition_point(|a| a.0 < threshold)..]
                .iter()
                .map(|a| a.1)
                .sum();
            TarAtFar {
                far_target: f,
                tar: accepted_gen as f64 / gf,
                far: accepted_imp as f64 / i_f,
                threshold,
            }
        };
        tar_at_far.push(row);
    }

    // AUC (Mann–Whitney): for every genuine score, impostors below plus half of those equal.
    let mut auc_sum = 0.0f64;
    {
        let (mut k, mut below) = (0usize, 0u64);
        for &(g, count) in &genuine {
            while k < imp.len() && imp[k].0 < g {
                below += imp[k].1;
                k += 1;
            }
            let equal = if k < imp.len() && imp[k].0 == g {
                imp[k].1
            } else {
                0
            };
            auc_sum += count as f64 * (below as f64 + 0.5 * equal as f64);
        }
    }
    let roc_auc = auc_sum / (gf * i_f);

    // One ascending pass over every distinct score: the curve and the EER bracket.
    let mut roc = Vec::new();
    let mut eer_a: Option<(f64, f64, f64)> = None; // (t, FAR, FRR) of the last point with D ≥ 0
    let mut eer_b: Option<(f64, f64, f64)> = None; // the next point
    let (mut gi, mut ii) = (0usize, 0usize);
    let (mut g_below, mut i_below) = (0u64, 0u64);
    let mut last_kept: Option<RocPoint> = None;
    let mut pending: Option<RocPoint> = None;
    let step = cfg.curve_step;
    while gi < genuine.len() || ii < imp.len() {
        let t = match (genuine.get(gi), imp.get(ii)) {
            (Some(&(g, _)), Some(&(x, _))) => g.min(x),
            (Some(&(g, _)), None) => g,
            (None, Some(&(x, _))) => x,
            (None, None) => unreachable!("loop condition"),
        };
        let p = RocPoint {
            threshold: t,
            far: (i_n - i_below) as f64 / i_f,
            tar: (g_n - g_below) as f64 / gf,
            genuine_accepted: g_n - g_below,
            impostor_accepted: i_n - i_below,
        };
        let (far, frr) = (p.far, g_below as f64 / gf);
        if far - frr >= 0.0 {
            eer_a = Some((t, far, frr));
            eer_b = None;
        } else if eer_b.is_none() {
            eer_b = Some((t, far, frr));
        }
        let keep = match &last_kept {
            None => true,
            Some(l) => {
                let lf = |x: f64| x.max(1.0 / i_f).log10();
                (p.far - l.far).abs() >= step
                    || (p.tar - l.tar).abs() >= step
                    || (lf(p.far) - lf(l.far)).abs() >= 5.0 * step
            }
        };
        if keep {
            roc.push(p);
            last_kept = Some(p);
            pending = None;
        } else {
            pending = Some(p);
        }
        if gi < genuine.len() && genuine[gi].0 == t {
            g_below += genuine[gi].1;
            gi += 1;
        }
        if ii < imp.len() && imp[ii].0 == t {
            i_below += imp[ii].1;
            ii += 1;
        }
    }
    if let Some(p) = pending {
        roc.push(p);
    }
    // At the smallest score FAR = 1, FRR = 0, so a point with D ≥ 0 always exists.
    let (ta, fa, ra) = eer_a.expect("the smallest score has FAR = 1 ≥ FRR = 0");
    let (eer, eer_threshold) = match eer_b {
        _ if fa == ra => (fa, ta),
        Some((tb, fb, rb)) => {
            let (da, db) = (fa - ra, fb - rb);
            let lambda = da / (da - db);
            (fa + lambda * (fb - fa), ta + lambda * (tb - ta))
        }
        None => {
            // The next point is "accept nothing": FAR = 0, FRR = 1.
            let (da, db) = (fa - ra, -1.0);
            let lambda = da / (da - db);
            (fa + lambda * (0.0 - fa), ta)
        }
    };
    Ok(Verification {
        pairs,
        similarity: cfg.similarity,
        genuine_pairs: g_n,
        impostor_pairs: i_n,
        impostor_bin_width: bin_widths.0,
        genuine_bin_width: bin_widths.1,
        tar_at_far,
        eer,
        eer_threshold,
        roc_auc,
        roc,
    })
}

fn check_set(m: &Matrix, labels: &[i64], what: &str) -> Result<(), EvalError> {
    if m.rows() == 0 || m.cols() == 0 {
        return Err(EvalError::Shape(format!(
            "{what} embeddings: empty ({} × {})",
            m.rows(),
            m.cols()
        )));
    }
    if labels.len() != m.rows() {
        return Err(EvalError::Shape(format!(
            "{what} labels: {} labels for {} embedding rows",
            labels.len(),
            m.rows()
        )));
    }
    if let Some(r) = m.first_non_finite_row() {
        return Err(EvalError::Invalid(format!(
            "{what} embeddings: row {r} holds a NaN or infinite value"
        )));
    }
    Ok(())
}

/// Verification metrics of class-labelled embeddings: all pairs `i < j` of `queries`, or
/// every query × gallery pair when `gallery` is given (see the module docs for the
/// definitions, the exact and histogram paths and their resolution). Errors (one line): label
/// count ≠ rows, empty sets, NaN/Inf rows, dimensions that differ, no genuine pair (every
/// class a singleton), no impostor pair (one class), bad settings.
pub fn verify(
    queries: &Matrix,
    query_labels: &[i64],
    gallery: Option<(&Matrix, &[i64])>,
    cfg: &VerificationConfig,
) -> Result<Verification, EvalError> {
    check_config(cfg)?;
    check_set(queries, query_labels, "query")?;
    if let Some((g, gl)) = gallery {
        check_set(g, gl, "gallery")?;
        if g.cols() != queries.cols() {
            return Err(EvalError::Shape(format!(
                "embeddings: query dimension {} differs from gallery dimension {}",
                queries.cols(),
                g.cols()
            )));
        }
    }
    let sim = cfg.similarity;
    let nq = queries.rows() as u64;
    let (pairs, total) = match gallery {
        None => (PairSet::AllPairs, nq * nq.saturating_sub(1) / 2),
        Some((g, _)) => (PairSet::QueryGallery, nq * g.rows() as u64),
    };
    let (gm, gl) = gallery.unwrap_or((queries, query_labels));

    // Rows grouped by class; the genuine count follows from the class sizes.
    let mut members: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (j, &l) in gl.iter().enumerate() {
        members.entry(l).or_default().push(j);
    }
    let n_genuine: u64 = match gallery {
        None => members
            .values()
            .map(|m| m.len() as u64 * (m.len() as u64 - 1) / 2)
            .sum(),
        Some(_) => query_labels
            .iter()
            .map(|l| members.get(l).map_or(0, |m| m.len() as u64))
            .sum(),
    };
    if n_genuine == 0 || n_genuine == total {
        // analyse names what is missing.
        let g = if n_genuine == 0 {
            vec![]
        } else {
            vec![(0.0, 1)]
        };
        return analyse(g, Vec::new(), (None, None), pairs, cfg);
    }
    let exact_genuine = total <= cfg.exact_max_pairs || n_genuine <= cfg.exact_max_genuine;
    let genuine = if exact_genuine {
        let mut genuine: Vec<f64> = (0..queries.rows())
            .into_par_iter()
            .flat_map_iter(|q| {
                let same = members.get(&query_labels[q]).map_or(&[][..], Vec::as_slice);
                let start = if gallery.is_none() {
                    same.partition_point(|&j| j <= q)
                } else {
                    0
                };
                same[start..]
                    .iter()
                    .map(move |&j| exact_score(sim, queries.row(q), gm.row(j)))
                    .collect::<Vec<_>>()
            })
            .collect();
        genuine.sort_by(f64::total_cmp);
        atoms(&genuine)
    } else {
        Vec::new()
    };

    if total <= cfg.exact_max_pairs {
        let mut imp: Vec<f64> = (0..queries.rows())
            .into_par_iter()
            .flat_map_iter(|q| {
                let start = if gallery.is_none() { q + 1 } else { 0 };
                let lq = query_labels[q];
                (start..gm.rows())
                    .filter(move |&j| gl[j] != lq)
                    .map(move |j| exact_score(sim, queries.row(q), gm.row(j)))
                    .collect::<Vec<_>>()
            })
            .collect();
        imp.sort_by(f64::total_cmp);
        return analyse(genuine, atoms(&imp), (None, None), pairs, cfg);
    }

    let h = histograms(queries, query_labels, gallery, cfg, !exact_genuine)?;
    let bins = h.impostor.len();
    let (lo, w) = (h.lo, h.width);
    let hi_edge = |b: usize| {
        if b + 1 == bins {
            lo + w * bins as f64
        } else {
            lo + w * (b + 1) as f64
        }
    };
    // Impostors rounded up, genuine scores rounded down: neither rate is overstated.
    let imp: Vec<(f64, u64)> = h
        .impostor
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(b, &c)| (hi_edge(b), c))
        .collect();
    let (genuine, gw) = match h.genuine {
        None => (genuine, None),
        Some(g) => (
            g.iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(b, &c)| (lo + w * b as f64, c))
                .collect(),
            Some(w),
        ),
    };
    analyse(genuine, imp, (Some(w), gw), pairs, cfg)
}

/// Per-row f32 copies ready for the GEMM (unit rows for cosine; a zero row stays zero) and
/// their squared norms.
fn prepared(m: &Matrix, sim: Similarity) -> (Vec<f32>, Vec<f32>, f64) {
    let d = m.cols();
    let mut data = m.data().to_vec();
    let mut sq = Vec::with_capacity(m.rows());
    let mut max_norm = 0.0f64;
    for row in data.chunks_exact_mut(d) {
        let n2: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
        max_norm = max_norm.max(n2.sqrt());
        if sim == Similarity::Cosine && n2 > 0.0 {
            let inv = 1.0 / n2.sqrt();
            row.iter_mut().for_each(|v| *v = (*v as f64 * inv) as f32);
        }
        sq.push(n2 as f32);
    }
    (data, sq, max_norm)
}

/// Binned pair scores (f32 GEMM): bin `b` covers `[lo + b·width, lo + (b+1)·width)`.
struct Histograms {
    impostor: Vec<u64>,
    /// Genuine counts, when asked for.
    genuine: Option<Vec<u64>>,
    lo: f64,
    width: f64,
}

/// Counts of the impostor (and, with `genuine`, the genuine) scores in `cfg.bins` bins.
fn histograms(
    queries: &Matrix,
    query_labels: &[i64],
    gallery: Option<(&Matrix, &[i64])>,
    cfg: &VerificationConfig,
    genuine: bool,
) -> Result<Histograms, EvalError> {
    let sim = cfg.similarity;
    let d = queries.cols();
    let (qd, qsq, qmax) = prepared(queries, sim);
    let (gd, gsq, gmax) = match gallery {
        Some((g, _)) => prepared(g, sim),
        None => (Vec::new(), Vec::new(), qmax),
    };
    let (gdata, gsq, gl) = match gallery {
        Some((_, l)) => (&gd[..], &gsq[..], l),
        None => (&qd[..], &qsq[..], query_labels),
    };
    let m = qmax.max(gmax);
    let (lo, hi) = match sim {
        Similarity::Cosine => (-1.0, 1.0),
        Similarity::Dot if m > 0.0 => (-m * m, m * m),
        Similarity::SqEuclidean if m > 0.0 => (-4.0 * m * m, 0.0),
        _ => (-1.0, 1.0),
    };
    if !(hi - lo).is_finite() || m * m > 1e36 {
        return Err(EvalError::Invalid(format!(
            "embedding norms up to {m:.3e} would overflow f32 {} scores; rescale the embeddings",
            sim.name()
        )));
    }
    let bins = cfg.bins;
    let w = (hi - lo) / bins as f64;
    let nq = queries.rows();
    let ng = gl.len();
    let b = cfg.block_rows;
    let loo = gallery.is_none();
    let mut tiles: Vec<(usize, usize)> = Vec::new();
    for i in (0..nq).step_by(b) {
        let first_j = if loo { i } else { 0 };
        for j in (first_j..ng).step_by(b) {
            tiles.push((i, j));
        }
    }
    let threads = rayon::current_num_threads().max(1);
    let chunk = tiles.len().div_ceil(threads).max(1);
    let parts: Vec<(Vec<u64>, Vec<u64>)> = tiles
        .par_chunks(chunk)
        .map(|part| {
            let mut counts = vec![0u64; bins];
            let mut gcounts = vec![0u64; if genuine { bins } else { 0 }];
            let mut buf = vec![0f32; b * b];
            for &(i0, j0) in part {
                let (mi, mj) = ((nq - i0).min(b), (ng - j0).min(b));
                let out = &mut buf[..mi * mj];
                gram(
                    out,
                    &qd[i0 * d..(i0 + mi) * d],
                    &gdata[j0 * d..(j0 + mj) * d],
                    (mi, mj, d),
                );
                for r in 0..mi {
                    let qi = i0 + r;
                    let lq = query_labels[qi];
                    let c0 = if loo && i0 == j0 { r + 1 } else { 0 };
                    for c in c0..mj {
                        let gj = j0 + c;
                        let same = gl[gj] == lq;
                        if same && !genuine {
                            continue;
                        }
                        let dot = out[r * mj + c] as f64;
                        let s = match sim {
                            Similarity::SqEuclidean => 2.0 * dot - qsq[qi] as f64 - gsq[gj] as f64,
                            _ => dot,
                        };
                        let k = ((s - lo) / w).floor();
                        let k = if k < 0.0 {
                            0
                        } else {
                            (k as usize).min(bins - 1)
                        };
                        if same {
                            gcounts[k] += 1;
                        } else {
                            counts[k] += 1;
                        }
                    }
                }
            }
            (counts, gcounts)
        })
        .collect();
    let mut counts = vec![0u64; bins];
    let mut gcounts = vec![0u64; if genuine { bins } else { 0 }];
    for (p, g) in parts {
        for (a, x) in counts.iter_mut().zip(p) {
            *a += x;
        }
        for (a, x) in gcounts.iter_mut().zip(g) {
            *a += x;
        }
    }
    Ok(Histograms {
        impostor: counts,
        genuine: genuine.then_some(gcounts),
        lo,
        width: w,
    })
}

/// `out (m × n, row-major) = A · Bᵀ` with `A` `m × d` and `B` `n × d` row-major; `dims` is
/// `(m, n, d)`.
fn gram(out: &mut [f32], a: &[f32], b: &[f32], dims: (usize, usize, usize)) {
    let (m, n, d) = dims;
    assert!(out.len() == m * n && a.len() == m * d && b.len() == n * d);
    // The kNN engine's GEMM (single-threaded: the callers are rayon tasks already).
    crate::knn::gemm_abt(out.as_mut_ptr(), out.len(), a.as_ptr(), b.as_ptr(), m, n, d);
}

/// One threshold of the calibration curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationPoint {
    /// A query is a match when its top-1 score is `≥ threshold`.
    pub threshold: f64,
    /// Queries accepted (matches).
    pub accepted: usize,
    /// Accepted queries whose top-1 neighbour has their label.
    pub correct: usize,
    /// `correct / accepted`.
    pub precision: f64,
    /// `correct / all queries`.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

/// The threshold chosen for one target precision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrecisionTarget {
    /// The target precision.
    pub target: f64,
    /// The smallest threshold with precision ≥ target; `None` when no threshold reaches it.
    pub point: Option<CalibrationPoint>,
}

/// Result of [`calibrate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Calibration queries.
    pub n_queries: usize,
    /// Queries whose top-1 neighbour has their label.
    pub n_correct: usize,
    /// The F1-optimal threshold.
    pub f1: CalibrationPoint,
    /// One entry per requested precision, in the order given.
    pub precision: Vec<PrecisionTarget>,
    /// Every distinct top-1 score as a threshold, descending.
    pub curve: Vec<CalibrationPoint>,
}

/// How [`Calibration::select`] picks a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibrationRule {
    /// The F1-optimal threshold.
    F1,
    /// The smallest threshold whose precision is at least this.
    Precision(f64),
}

impl CalibrationRule {
    /// Parses `f1`, `precision=P` or `precision>=P` (`0 < P ≤ 1`).
    pub fn parse(rule: &str) -> Result<Self, EvalError> {
        let r = rule.trim();
        if r.eq_ignore_ascii_case("f1") {
            return Ok(Self::F1);
        }
        let p = r
            .strip_prefix("precision>=")
            .or_else(|| r.strip_prefix("precision="))
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "rule {r:?}: expected f1 or precision=P (0 < P ≤ 1)"
                ))
            })?;
        let p: f64 = p.trim().parse().map_err(|_| {
            EvalError::Invalid(format!(
                "rule {r:?}: cannot parse the precision {p:?} (expected 0 < P ≤ 1)"
            ))
        })?;
        check_precision(p, "rule")?;
        Ok(Self::Precision(p))
    }

    /// `f1` or `precision>=P`, as stored in an index manifest.
    pub fn name(&self) -> String {
        match self {
            Self::F1 => "f1".into(),
            Self::Precision(p) => format!("precision>={p}"),
        }
    }
}

impl Calibration {
    /// The point a rule picks on the curve; an error when no threshold reaches the precision.
    pub fn select(&self, rule: &CalibrationRule) -> Result<CalibrationPoint, EvalError> {
        match *rule {
            CalibrationRule::F1 => Ok(self.f1),
            CalibrationRule::Precision(p) => precision_point(&self.curve, p).ok_or_else(|| {
                EvalError::Invalid(format!(
                    "rule {}: no threshold reaches precision {p} on the {} calibration queries (best {:.4})",
                    rule.name(),
                    self.n_queries,
                    self.curve.iter().map(|c| c.precision).fold(0.0, f64::max)
                ))
            }),
        }
    }

    /// [`CalibrationRule::parse`] then [`Calibration::select`].
    pub fn rule(&self, rule: &str) -> Result<CalibrationPoint, EvalError> {
        self.select(&CalibrationRule::parse(rule)?)
    }

    /// A table: the F1-optimal threshold and one row per precision target.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "calibration queries: {}, top-1 correct: {} ({:.4})",
            self.n_queries,
            self.n_correct,
            self.n_correct as f64 / self.n_queries as f64
        );
        let _ = writeln!(
            out,
            "| {:<16} | {:>12} | {:>9} | {:>7} | {:>7} | {:>8} |",
            "rule", "threshold", "precision", "recall", "f1", "accepted"
        );
        let _ = writeln!(
            out,
            "|{:-<18}|{:->14}|{:->11}|{:->9}|{:->9}|{:->10}|",
            "", ":", ":", ":", ":", ":"
        );
        let mut row = |name: String, p: Option<&CalibrationPoint>| {
            let _ = match p {
                Some(p) => writeln!(
                    out,
                    "| {:<16} | {:>12.6} | {:>9.4} | {:>7.4} | {:>7.4} | {:>8} |",
                    name, p.threshold, p.precision, p.recall, p.f1, p.accepted
                ),
                None => writeln!(
                    out,
                    "| {:<16} | {:>12} | {:>9} | {:>7} | {:>7} | {:>8} |",
                    name, "not reached", "-", "-", "-", "-"
                ),
            };
        };
        row("f1".into(), Some(&self.f1));
        for t in &self.precision {
            row(format!("precision>={}", t.target), t.point.as_ref());
        }
        out
    }
}

/// For a threshold `t` that is an f32 value widened to f64 (an index's top-1 score): the
/// shortest decimal `d` with `prev_f32(t) < d ≤ t`. Every f32 score `s` then has
/// `s ≥ d ⇔ s ≥ t`, so decisions do not change, and `d` (about 9 significant digits) survives
/// a JSON round trip through any parser, where the 17-digit f64 of `t` may come back one ulp
/// off. Other values (not an f32, not finite) are returned unchanged.
pub fn f32_threshold_decimal(t: f64) -> f64 {
    let tf = t as f32;
    if !t.is_finite() || f64::from(tf) != t {
        return t;
    }
    let prev = f64::from(tf.next_down());
    let mid = 0.5 * (prev + t);
    for digits in 0..17 {
        if let Ok(d) = format!("{mid:.digits$e}").parse::<f64>() {
            if d > prev && d <= t {
                return d;
            }
        }
    }
    t
}

fn check_precision(p: f64, what: &str) -> Result<(), EvalError> {
    if !(p > 0.0 && p <= 1.0) {
        return Err(EvalError::Invalid(format!(
            "{what}: precision {p} is not in (0, 1]"
        )));
    }
    Ok(())
}

fn precision_point(curve: &[CalibrationPoint], p: f64) -> Option<CalibrationPoint> {
    // Descending thresholds: the last one reaching p is the smallest.
    curve.iter().rev().find(|c| c.precision >= p).copied()
}

/// Open-set calibration from each query's top-1 score and whether its top-1 neighbour has the
/// query's label (see the module docs). Errors: no query, lengths that differ, a NaN score, a
/// target outside `(0, 1]`, or no correct top-1 at all (every F1 would be 0).
pub fn calibrate(
    top1_scores: &[f64],
    correct: &[bool],
    precision_targets: &[f64],
) -> Result<Calibration, EvalError> {
    let n = top1_scores.len();
    if n == 0 {
        return Err(EvalError::Shape("calibration: no queries".into()));
    }
    if correct.len() != n {
        return Err(EvalError::Shape(format!(
            "calibration: {} correctness flags for {n} scores",
            correct.len()
        )));
    }
    if let Some(i) = top1_scores.iter().position(|s| s.is_nan()) {
        return Err(EvalError::Invalid(format!(
            "calibration: query {i} has a NaN score"
        )));
    }
    for &p in precision_targets {
        check_precision(p, "precision targets")?;
    }
    let n_correct = correct.iter().filter(|&&c| c).count();
    if n_correct == 0 {
        return Err(EvalError::Invalid(format!(
            "calibration: none of the {n} queries has a top-1 neighbour of its own label, so no threshold has a positive precision"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| top1_scores[b].total_cmp(&top1_scores[a]));
    let mut curve = Vec::new();
    let (mut acc, mut ok) = (0usize, 0usize);
    let mut k = 0;
    while k < n {
        let t = top1_scores[order[k]];
        while k < n && top1_scores[order[k]] == t {
            acc += 1;
            ok += usize::from(correct[order[k]]);
            k += 1;
        }
        let precision = ok as f64 / acc as f64;
        let recall = ok as f64 / n as f64;
        let f1 = if ok == 0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        curve.push(CalibrationPoint {
            threshold: t,
            accepted: acc,
            correct: ok,
            precision,
            recall,
            f1,
        });
    }
    // Strictly larger F1 replaces: ties keep the larger threshold (seen first).
    let mut best = curve[0];
    for c in &curve[1..] {
        if c.f1 > best.f1 {
            best = *c;
        }
    }
    let precision = precision_targets
        .iter()
        .map(|&p| PrecisionTarget {
            target: p,
            point: precision_point(&curve, p),
        })
        .collect();
    Ok(Calibration {
        n_queries: n,
        n_correct,
        f1: best,
        precision,
        curve,
    })
}
