//! Uncertainty of query-averaged metrics: percentile bootstrap confidence intervals and
//! paired bootstrap comparisons of two embedding sets evaluated on the same queries.
//!
//! A resample draws `n` queries uniformly with replacement from the `n` evaluated
//! queries and recomputes the average (micro: mean over queries; macro: mean over the
//! classes present in the resample of each class's mean). Resample `b` uses its own
//! ChaCha8 stream (`ChaCha8Rng::seed_from_u64(seed)` with `set_stream(b)`), so results do
//! not depend on the number of threads. The interval is the percentile interval
//! (Efron & Tibshirani 1993, §13.3): the `(1−level)/2` and `(1+level)/2` quantiles of the
//! resampled statistics, with numpy's default linear interpolation between order
//! statistics.

use crate::EvalError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (default 1000).
    pub resamples: usize,
    /// Coverage of the interval, in `(0, 1)` (default 0.95).
    pub level: f64,
    /// Seed of the ChaCha8 generator (default 0).
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: 1000,
            level: 0.95,
            seed: 0,
        }
    }
}

impl BootstrapConfig {
    /// Checks `resamples ≥ 1` and `0 < level < 1`.
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.resamples == 0 {
            return Err(EvalError::Invalid(
                "bootstrap.resamples must be at least 1".into(),
            ));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(EvalError::Invalid(format!(
                "bootstrap.level must lie strictly between 0 and 1, got {}",
                self.level
            )));
        }
        Ok(())
    }
}

/// Class membership of each evaluated query, for macro (per-class) averaging.
#[derive(Debug, Clone, Copy)]
pub struct Grouping<'a> {
    /// Dense class id (`0..n_groups`) of each query.
    pub ids: &'a [usize],
    /// Number of classes.
    pub n_groups: usize,
}

/// Average of `values` with integer `weights` (a bootstrap resample's multiplicities; all
/// ones for the plain estimate): micro = `Σ wᵢvᵢ / Σ wᵢ`; macro = mean over classes with
/// `Σ_{i∈c} wᵢ > 0` of `Σ_{i∈c} wᵢvᵢ / Σ_{i∈c} wᵢ` (PML `avg_of_avgs`). Empty input gives
/// NaN.
fn weighted_average(values: &[f64], weights: Option<&[u32]>, groups: Option<Grouping>) -> f64 {
    let w = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    match groups {
        None => {
            let (mut s, mut n) = (0.0f64, 0.0f64);
            for (i, &v) in values.iter().enumerate() {
                let wi = w(i);
                s += wi * v;
                n += wi;
            }
            s / n
        }
        Some(g) => {
            let mut s = vec![0.0f64; g.n_groups];
            let mut n = vec![0.0f64; g.n_groups];
            for (i, &v) in values.iter().enumerate() {
                let wi = w(i);
                s[g.ids[i]] += wi * v;
                n[g.ids[i]] += wi;
            }
            let (mut total, mut classes) = (0.0f64, 0usize);
            for (si, ni) in s.iter().zip(&n) {
                if *ni > 0.0 {
                    total += si / ni;
                    classes += 1;
                }
            }
            total / classes as f64
        }
    }
}

/// Mean of per-query values: micro, or macro when `groups` is given (see module docs).
pub fn average(values: &[f64], groups: Option<Grouping>) -> f64 {
    weighted_average(values, None, groups)
}

/// Quantile `q ∈ [0, 1]` of ascending `sorted` with linear interpolation between order
/// statistics (`numpy.percentile`'s default): position `q·(n−1)`. Empty input gives NaN.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// Multiplicities of one resample: `n` uniform draws with replacement out of `n`.
fn resample_weights(n: usize, seed: u64, b: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(b as u64);
    let mut w = vec![0u32; n];
    for _ in 0..n {
        w[rng.random_range(0..n)] += 1;
    }
    w
}

fn check_lengths(series: &[&[f64]], n: usize, groups: Option<Grouping>) -> Result<(), EvalError> {
    if let Some(i) = series.iter().position(|s| s.len() != n) {
        return Err(EvalError::Shape(format!(
            "bootstrap: series {i} has {} per-query values, series 0 has {n}",
            series[i].len()
        )));
    }
    if let Some(g) = groups {
        if g.ids.len() != n {
            return Err(EvalError::Shape(format!(
                "bootstrap: {} class ids for {n} queries",
                g.ids.len()
            )));
        }
        if let Some(&bad) = g.ids.iter().find(|&&c| c >= g.n_groups) {
            return Err(EvalError::Shape(format!(
                "bootstrap: class id {bad} out of range 0..{}",
                g.n_groups
            )));
        }
    }
    if n == 0 {
        return Err(EvalError::Invalid(
            "bootstrap needs at least one evaluated query".into(),
        ));
    }
    Ok(())
}

/// Resampled statistics: `out[m][b]` = average of series `m` under resample `b`, for each
/// series in `series` (all of the same length, resampled jointly).
fn resampled(series: &[&[f64]], groups: Option<Grouping>, cfg: &BootstrapConfig) -> Vec<Vec<f64>> {
    let n = series[0].len();
    let per_b: Vec<Vec<f64>> = (0..cfg.resamples)
        .into_par_iter()
        .map(|b| {
            let w = resample_weights(n, cfg.seed, b);
            series
                .iter()
                .map(|s| weighted_average(s, Some(&w), groups))
                .collect()
        })
        .collect();
    (0..series.len())
        .map(|m| per_b.iter().map(|row| row[m]).collect())
        .collect()
}

fn interval(mut stats: Vec<f64>, level: f64) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    (quantile_sorted(&stats, a), quantile_sorted(&stats, 1.0 - a))
}

/// Percentile bootstrap interval of the average of each series (one series per metric,
/// one value per evaluated query; all series resampled with the same draws).
pub fn bootstrap_ci(
    series: &[&[f64]],
    groups: Option<Grouping>,
    cfg: &BootstrapConfig,
) -> Result<Vec<(f64, f64)>, EvalError> {
    cfg.validate()?;
    if series.is_empty() {
        return Ok(Vec::new());
    }
    check_lengths(series, series[0].len(), groups)?;
    Ok(resampled(series, groups, cfg)
        .into_iter()
        .map(|s| interval(s, cfg.level))
        .collect())
}

/// One metric compared between embedding sets A and B on the same queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedDifference {
    /// Metric name.
    pub name: String,
    /// Average for A.
    pub a: f64,
    /// Average for B.
    pub b: f64,
    /// `a − b`.
    pub diff: f64,
    /// Paired percentile bootstrap interval of `a − b` (queries resampled jointly).
    pub ci: (f64, f64),
    /// Fraction of resamples whose difference does not keep the observed strict sign
    /// (`≤ 0` when `diff > 0`, `≥ 0` when `diff < 0`; every resample when `diff = 0`): a
    /// one-sided bootstrap p-value for "A and B differ in this direction".
    pub sign_flip_fraction: f64,
}

/// Paired bootstrap of `average(a) − average(b)` for each metric: `a[m]` and `b[m]` hold
/// per-query values of metric `names[m]` for the same queries in the same order.
pub fn paired_bootstrap(
    names: &[String],
    a: &[&[f64]],
    b: &[&[f64]],
    groups: Option<Grouping>,
    cfg: &BootstrapConfig,
) -> Result<Vec<PairedDifference>, EvalError> {
    cfg.validate()?;
    if a.len() != names.len() || b.len() != names.len() {
        return Err(EvalError::Shape(format!(
            "paired bootstrap: {} names, {} series for A, {} for B",
            names.len(),
            a.len(),
            b.len()
        )));
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let n = a[0].len();
    let all: Vec<&[f64]> = a.iter().chain(b.iter()).copied().collect();
    check_lengths(&all, n, groups)?;
    // The difference of two weighted averages with shared weights is the weighted average
    // of the per-query differences (also per class), so resample the differences.
    let diffs: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y.iter()).map(|(p, q)| p - q).collect())
        .collect();
    let diff_refs: Vec<&[f64]> = diffs.iter().map(Vec::as_slice).collect();
    let stats = resampled(&diff_refs, groups, cfg);
    Ok(names
        .iter()
        .enumerate()
        .map(|(m, name)| {
            let (ma, mb) = (average(a[m], groups), average(b[m], groups));
            let diff = average(&diffs[m], groups);
            let flips = stats[m]
                .iter()
                .filter(|&&s| {
                    if diff > 0.0 {
                        s <= 0.0
                    } else if diff < 0.0 {
                        s >= 0.0
                    } else {
                        true
                    }
                })
                .count();
            PairedDifference {
                name: name.clone(),
                a: ma,
                b: mb,
                diff,
                sign_flip_fraction: flips as f64 / cfg.resamples as f64,
                ci: interval(stats[m].clone(), cfg.level),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_n_and_are_deterministic() {
        let w = resample_weights(50, 7, 3);
        assert_eq!(w.iter().sum::<u32>(), 50);
        assert_eq!(w, resample_weights(50, 7, 3));
        assert_ne!(w, resample_weights(50, 7, 4));
    }
}
