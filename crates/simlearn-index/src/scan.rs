//! Exact search of a few queries: one pass over the gallery per query.
//!
//! The evaluation engine ([`simlearn_eval::knn`]) is built for many queries at once: it packs
//! and (for cosine) re-normalises gallery tiles per call, which for one query costs more than
//! the scores themselves (about 40 ms on 59,502 × 512). A service asks one query at a time, so
//! below [`SCAN_MAX_QUERIES`] queries the index scans instead: a f32 dot product per row
//! against per-row factors computed once ([`RowAux`]), and the best `k + SLACK` rows kept as
//! candidates, which the index re-scores exactly as it does the HNSW graph's. The f32 pre-score
//! is off by at most a few ulps of the dot product, far less than the gap `SLACK` extra rows
//! cover, so the result equals the exact ranking, ties to the lower row included.

use rayon::prelude::*;
use simlearn_eval::{Matrix, Similarity};

/// Largest query batch searched by the scan (larger ones use the blocked GEMM engine).
pub const SCAN_MAX_QUERIES: usize = 8;
/// Rows kept beyond `k` for the exact re-score.
const SLACK: usize = 32;
/// Gallery rows per parallel work item.
const CHUNK: usize = 4096;

/// Per-row factors that make `dot(q, g) · a + b` rank rows as the similarity does.
pub struct RowAux {
    /// Cosine: 1 / ‖g‖ (0 for a zero row); dot: 1; squared Euclidean: 2.
    scale: Vec<f32>,
    /// Squared Euclidean: −‖g‖²; otherwise 0.
    shift: Vec<f32>,
}

impl RowAux {
    /// The factors of every row of `g`.
    pub fn new(g: &Matrix, sim: Similarity) -> Self {
        let sq: Vec<f64> = (0..g.rows())
            .into_par_iter()
            .map(|i| g.row(i).iter().map(|&x| f64::from(x) * f64::from(x)).sum())
            .collect();
        let (scale, shift) = match sim {
            Similarity::Cosine => (
                sq.iter()
                    .map(|&s| {
                        if s > 0.0 {
                            (1.0 / s.sqrt()) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                vec![0.0; sq.len()],
            ),
            Similarity::Dot => (vec![1.0; sq.len()], vec![0.0; sq.len()]),
            Similarity::SqEuclidean => {
                (vec![2.0; sq.len()], sq.iter().map(|&s| -s as f32).collect())
            }
        };
        Self { scale, shift }
    }
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

/// `a · b` in f32 with the widest FMA the CPU has (chosen at run time).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Keeps the `cap` best (pre-score, row) pairs: larger score first, then lower row.
fn push(best: &mut Vec<(f32, usize)>, cap: usize, item: (f32, usize)) {
    let better = |a: &(f32, usize), b: &(f32, usize)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
    if best.len() == cap {
        match best.last() {
            Some(worst) if better(&item, worst) => {
                best.pop();
            }
            _ => return,
        }
    }
    let at = best.partition_point(|x| better(x, &item));
    best.insert(at, item);
}

/// The candidate rows for the `k` nearest rows of `q` in `g`: the best `k + SLACK` by the f32
/// pre-score (larger first, then lower row), to be re-scored exactly.
pub fn scan(g: &Matrix, aux: &RowAux, q: &[f32], k: usize) -> Vec<usize> {
    let cap = (k + SLACK).min(g.rows());
    let partial: Vec<Vec<(f32, usize)>> = (0..g.rows().div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut best = Vec::with_capacity(cap + 1);
            for r in c * CHUNK..((c + 1) * CHUNK).min(g.rows()) {
                let s = dot(q, g.row(r)).mul_add(aux.scale[r], aux.shift[r]);
                push(&mut best, cap, (if s.is_nan() { f32::MIN } else { s }, r));
            }
            best
        })
        .collect();
    let mut best = Vec::with_capacity(cap + 1);
    for p in partial {
        for item in p {
            push(&mut best, cap, item);
        }
    }
    best.into_iter().map(|(_, r)| r).collect()
}
