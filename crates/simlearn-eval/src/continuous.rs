//! Per-query retrieval metrics for continuous (vector) labels, as in Kim, Kim, Cho &
//! Kwak, "Deep Metric Learning Beyond Binary Supervision" (CVPR 2019), human-pose
//! retrieval protocol (`shared/specs/log-ratio-loss.md` §5.1):
//!
//! - relevance of a gallery item at label distance `d`: `rel = 2^{−log₂(1+d)} = 1/(1+d)`;
//! - `DCG@K(π) = Σ_{r=1..K} rel(π(r)) / log₂(r+1)` (numerator `2^r`, not `2^r − 1`);
//! - `nDCG@K = DCG@K(embedding ranking) / DCG@K(ideal ranking)`, the ideal ranking being
//!   the gallery sorted by true label distance (ties by gallery index);
//! - mean label distance@K: `(1/K) Σ_{r=1..K} d(π(r))` over the embedding ranking, in the
//!   label's own units (the paper's ×224/288 rescaling of MPII pixels is left to the
//!   caller).

use crate::{LabelDistance, Matrix};

/// Graded relevance `1/(1+d)` of an item at label distance `d ≥ 0`.
pub fn relevance(d: f64) -> f64 {
    1.0 / (1.0 + d)
}

/// `Σ_{r=1..min(K, len)} rel(d_r) / log₂(r+1)` over label distances in ranked order.
pub fn dcg_at_k(ranked_distances: &[f64], k: usize) -> f64 {
    ranked_distances
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &d)| relevance(d) / ((i + 2) as f64).log2())
        .sum()
}

/// `DCG@K(retrieved) / DCG@K(ideal)`; `ideal` must hold the gallery's smallest label
/// distances in ascending order (at least `min(K, gallery)` of them). Relevance is
/// positive for every finite distance, so the ideal DCG is positive whenever the gallery
/// is not empty; an empty gallery gives 0.
pub fn ndcg_at_k(retrieved: &[f64], ideal: &[f64], k: usize) -> f64 {
    let z = dcg_at_k(ideal, k);
    if z > 0.0 {
        dcg_at_k(retrieved, k) / z
    } else {
        0.0
    }
}

/// Mean label distance of the first `min(K, len)` retrieved items (0 for an empty list).
pub fn mean_label_distance_at_k(retrieved: &[f64], k: usize) -> f64 {
    let k = k.min(retrieved.len());
    if k == 0 {
        return 0.0;
    }
    retrieved[..k].iter().sum::<f64>() / k as f64
}

/// The `k` smallest label distances from `query_label` to the rows of `gallery_labels`
/// (row `skip` excluded: the query itself in leave-one-out evaluation), ascending, ties
/// broken by gallery index.
pub fn ideal_distances(
    query_label: &[f32],
    gallery_labels: &Matrix,
    skip: Option<usize>,
    k: usize,
    dist: &LabelDistance,
) -> Vec<f64> {
    let mut all: Vec<(f64, usize)> = (0..gallery_labels.rows())
        .filter(|&i| Some(i) != skip)
        .map(|i| (dist.dist(query_label, gallery_labels.row(i)), i))
        .collect();
    let cmp = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let k = k.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, cmp);
        all.truncate(k);
    }
    all.sort_unstable_by(cmp);
    all.into_iter().map(|(d, _)| d).collect()
}
