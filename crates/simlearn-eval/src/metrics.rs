//! Per-query retrieval metrics for class labels, computed from one query's ranked
//! relevance list.
//!
//! Every function takes `rel`: the relevance flags of the retrieved gallery items, best
//! first, with the query itself already removed (leave-one-out), and where needed `r`:
//! the number of gallery items that share the query's class (PML's `R(q)`, the query
//! itself not counted). Positions beyond `rel.len()` (not retrieved) count as misses.
//! Queries are averaged by the caller ([`crate::evaluate_classes`]); these functions
//! return one query's value in `[0, 1]`.
//!
//! Conventions reproduced (see `shared/specs/anchors.md` §2):
//! - [`precision_at_1`], [`r_precision`], [`average_precision_at_r`],
//!   [`reciprocal_rank`]: pytorch-metric-learning (PML) `AccuracyCalculator` 2.x
//!   (`precision_at_1`, `r_precision`, `mean_average_precision_at_r`,
//!   `mean_reciprocal_rank`) when the retrieved list holds at least `R(q)` items, which
//!   [`crate::evaluate_classes`] always guarantees.
//! - [`recall_at_k`]: the deep-metric-learning "Recall@K" (OML `cmc@k`, TF-Similarity
//!   `RecallAtK`): 1 when at least one of the first K items is relevant. Not the
//!   information-retrieval recall (fraction of relevant items found).
//! - [`average_precision_at_k`]: three documented divisors, see [`MapAtKDivisor`].

use serde::{Deserialize, Serialize};

/// `1` when the first retrieved item is relevant, else `0` (PML `precision_at_1`; equals
/// Recall@1 and OML `cmc@1`). An empty list gives `0`.
pub fn precision_at_1(rel: &[bool]) -> f64 {
    f64::from(u8::from(rel.first().copied().unwrap_or(false)))
}

/// DML Recall@K: `1` if any of the first `min(k, rel.len())` items is relevant, else `0`.
pub fn recall_at_k(rel: &[bool], k: usize) -> f64 {
    f64::from(u8::from(rel.iter().take(k).any(|&b| b)))
}

/// R-precision: `|{i ≤ R : rel_i}| / R` (PML `r_precision`, MLRC §3.2). `r = 0` (a lone
/// query, nothing can be retrieved) gives `0`.
///
/// When fewer than `R` items were retrieved the missing positions count as misses (still
/// divided by `R`); PML instead divides by `min(k, R)` in that case, which it documents
/// as "incorrect values" and warns about.
pub fn r_precision(rel: &[bool], r: usize) -> f64 {
    if r == 0 {
        return 0.0;
    }
    let hits = rel.iter().take(r).filter(|&&b| b).count();
    hits as f64 / r as f64
}

/// Sum of `precision@i` over the relevant positions `i ≤ depth` (1-based):
/// `Σ_{i ≤ depth, rel_i} (hits in 1..=i) / i`. Accumulated in f64.
fn summed_precision(rel: &[bool], depth: usize) -> (f64, usize) {
    let mut hits = 0usize;
    let mut sum = 0.0f64;
    for (i, _) in rel.iter().take(depth).enumerate().filter(|(_, &b)| b) {
        hits += 1;
        sum += hits as f64 / (i + 1) as f64;
    }
    (sum, hits)
}

/// MAP@R of one query (Musgrave et al., "A Metric Learning Reality Check", §3.2; PML
/// `mean_average_precision_at_r`):
/// `AP@R = (1/R) Σ_{i ≤ R} P(i)·rel_i` with `P(i) = (Σ_{j ≤ i} rel_j) / i`.
/// `r = 0` gives `0`. Missing positions (fewer than `R` retrieved) count as misses.
pub fn average_precision_at_r(rel: &[bool], r: usize) -> f64 {
    if r == 0 {
        return 0.0;
    }
    summed_precision(rel, r).0 / r as f64
}

/// What `Σ_{i ≤ K} P(i)·rel_i` is divided by in [`average_precision_at_k`]; the three
/// libraries disagree (anchors.md §2.1–2.3), so the choice is explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MapAtKDivisor {
    /// `min(K, R)` (the default): a perfect ranking scores 1 for every K, the value equals
    /// MAP@R at `K = R`, and equals PML / TF-Similarity (division by `R`) once `K ≥ R`.
    #[default]
    MinKR,
    /// `R`, the class size: PML `mean_average_precision` computed with `k = K`, and
    /// TF-Similarity `MapAtK` without `clip_at_r`. Below `K = R` even a perfect ranking
    /// scores `K/R`.
    R,
    /// The number of relevant items found in the top K (OML `map@k`); `0` when none.
    Hits,
}

/// MAP@K of one query: `(1/D) Σ_{i ≤ K} P(i)·rel_i`, with `D` chosen by `divisor`
/// ([`MapAtKDivisor`]). `r = 0` gives `0` for the `MinKR`/`R` divisors.
pub fn average_precision_at_k(rel: &[bool], k: usize, r: usize, divisor: MapAtKDivisor) -> f64 {
    let (sum, hits) = summed_precision(rel, k);
    let d = match divisor {
        MapAtKDivisor::MinKR => k.min(r),
        MapAtKDivisor::R => r,
        MapAtKDivisor::Hits => hits,
    };
    if d == 0 {
        0.0
    } else {
        sum / d as f64
    }
}

/// Reciprocal rank: `1 / i` for the first relevant position `i` (1-based) within the
/// retrieved list, `0` when none of it is relevant (PML `mean_reciprocal_rank`, whose
/// depth is its `k`).
pub fn reciprocal_rank(rel: &[bool]) -> f64 {
    rel.iter()
        .position(|&b| b)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn empty_list_is_all_zero() {
        assert_eq!(precision_at_1(&[]), 0.0);
        assert_eq!(recall_at_k(&[], 4), 0.0);
        assert_eq!(reciprocal_rank(&[]), 0.0);
        assert_eq!(r_precision(&[], 3), 0.0);
        assert_eq!(average_precision_at_r(&[], 3), 0.0);
    }

    #[test]
    fn summed_precision_matches_hand_value() {
        // hits at 2 and 4: 1/2 + 2/4 = 1.0
        assert_eq!(summed_precision(&r("0101"), 4), (1.0, 2));
        assert_eq!(summed_precision(&r("0101"), 3), (0.5, 1));
    }

    #[test]
    fn hits_divisor_ignores_class_size() {
        let rel = r("0110");
        // (1/2 + 2/3) / 2
        let v = average_precision_at_k(&rel, 4, 10, MapAtKDivisor::Hits);
        assert!((v - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
    }
}
