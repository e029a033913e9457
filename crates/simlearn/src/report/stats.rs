//! The numbers behind the report's figures: pair similarities, histograms, label distance by
//! rank, and the choice of queries to show.

use serde::Serialize;
use simlearn_eval::{LabelDistance, Matrix, Neighbours};

/// Cosine similarities `x_i·x_j / (‖x_i‖‖x_j‖)` of every unordered pair `i < j` of rows of `emb`,
/// split into positive pairs (same class) and negative pairs (different classes). A zero row
/// has cosine 0 with everything, as [`simlearn_eval::Similarity::Cosine`] defines it.
pub fn pair_cosines(emb: &Matrix, labels: &[i64]) -> (Vec<f64>, Vec<f64>) {
    let n = emb.rows().min(labels.len());
    let unit: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let row = emb.row(i);
            let norm = row
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            row.iter().map(|&v| v as f64 * scale).collect()
        })
        .collect();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            let c: f64 = unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
            if labels[i] == labels[j] {
                pos.push(c);
            } else {
                neg.push(c);
            }
        }
    }
    (pos, neg)
}

/// Counts of values in `bins` equal-width bins over `[lo, hi]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Left edge of the first bin.
    pub lo: f64,
    /// Right edge of the last bin.
    pub hi: f64,
    /// Values per bin; bin `b` covers `[lo + b·w, lo + (b+1)·w)` with `w = (hi − lo)/bins`,
    /// the last bin also holds `hi`.
    pub counts: Vec<usize>,
    /// Values counted (non-finite values are skipped).
    pub total: usize,
    /// Mean of the counted values (NaN when none).
    pub mean: f64,
}

impl Histogram {
    /// Bins `values`; values outside `[lo, hi]` (floating-point spill of a cosine, say) go to
    /// the nearest edge bin. Requires `bins ≥ 1` and `lo < hi`.
    pub fn new(values: &[f64], lo: f64, hi: f64, bins: usize) -> Self {
        assert!(
            bins >= 1 && lo < hi,
            "histogram needs bins >= 1 and lo < hi"
        );
        let mut counts = vec![0usize; bins];
        let (mut total, mut sum) = (0usize, 0.0);
        let w = (hi - lo) / bins as f64;
        for &v in values.iter().filter(|v| v.is_finite()) {
            let b = ((v - lo) / w).floor();
            let b = if b < 0.0 {
                0
            } else {
                (b as usize).min(bins - 1)
            };
            counts[b] += 1;
            total += 1;
            sum += v;
        }
        Self {
            lo,
            hi,
            counts,
            total,
            mean: if total > 0 {
                sum / total as f64
            } else {
                f64::NAN
            },
        }
    }

    /// Share of the counted values in each bin (all 0 when nothing was counted), so that
    /// positive and negative pairs, whose numbers differ by the number of classes, compare.
    pub fn fractions(&self) -> Vec<f64> {
        let t = self.total.max(1) as f64;
        self.counts.iter().map(|&c| c as f64 / t).collect()
    }

    /// `(left, right)` edges of bin `b`.
    pub fn edges(&self, b: usize) -> (f64, f64) {
        let w = (self.hi - self.lo) / self.counts.len() as f64;
        (self.lo + b as f64 * w, self.lo + (b + 1) as f64 * w)
    }
}

/// Mean over queries of the label distance between query `q` and its `r`-th retrieved
/// neighbour, for `r = 1..=neigh.k` (entry `r − 1`). Not cumulative: rank `r` alone.
pub fn label_distance_by_rank(
    neigh: &Neighbours,
    labels: &Matrix,
    distance: &LabelDistance,
) -> Vec<f64> {
    let n = neigh.n_queries();
    let mut sums = vec![0.0; neigh.k];
    for q in 0..n {
        let (idx, _) = neigh.row(q);
        for (r, &g) in idx.iter().enumerate() {
            sums[r] += distance.dist(labels.row(q), labels.row(g as usize));
        }
    }
    sums.into_iter().map(|s| s / n.max(1) as f64).collect()
}

/// Label distances from item `q` to every other item, ascending.
pub fn sorted_label_distances(labels: &Matrix, q: usize, distance: &LabelDistance) -> Vec<f64> {
    let mut d: Vec<f64> = (0..labels.rows())
        .filter(|&j| j != q)
        .map(|j| distance.dist(labels.row(q), labels.row(j)))
        .collect();
    d.sort_by(f64::total_cmp);
    d
}

/// The oracle's curve: mean over items of the `r`-th smallest label distance to the other
/// items (leave-one-out), `r = 1..=k`. A perfect embedding retrieves exactly these.
pub fn ideal_label_distance_by_rank(
    labels: &Matrix,
    distance: &LabelDistance,
    k: usize,
) -> Vec<f64> {
    let n = labels.rows();
    let mut sums = vec![0.0; k];
    for q in 0..n {
        let d = sorted_label_distances(labels, q, distance);
        for (r, s) in sums.iter_mut().enumerate() {
            if let Some(v) = d.get(r) {
                *s += v;
            }
        }
    }
    sums.into_iter().map(|s| s / n.max(1) as f64).collect()
}

/// The `count` queries with the lowest per-query values (ties: lower row first).
/// `rows[i]` is the query row of `values[i]`; NaN values sort last.
pub fn worst_queries(rows: &[usize], values: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<(f64, usize)> = values.iter().copied().zip(rows.iter().copied()).collect();
    order.sort_by(|a, b| {
        a.0.is_nan()
            .cmp(&b.0.is_nan())
            .then(a.0.total_cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    order.into_iter().take(count).map(|(_, r)| r).collect()
}

/// `count` distinct rows drawn uniformly from `rows` with a ChaCha8 stream seeded by `seed`
/// (all of them when `count ≥ rows.len()`), in drawing order.
pub fn seeded_queries(rows: &[usize], count: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let amount = count.min(rows.len());
    rand::seq::index::sample(&mut rng, rows.len(), amount)
        .into_iter()
        .map(|i| rows[i])
        .collect()
}
