//! Clustering quality of an embedding: seeded k-means++ followed by normalized and
//! adjusted mutual information against the true classes.
//!
//! PML's `AccuracyCalculator` clusters the query embeddings with faiss k-means
//! (k = number of distinct query labels) and scores the partition with scikit-learn's
//! `normalized_mutual_info_score` / `adjusted_mutual_info_score`. We reproduce the
//! scoring functions exactly (arithmetic averaging, sklearn's special cases and
//! floating-point guards); the clustering itself is our own seeded k-means++, so NMI/AMI
//! values are comparable with PML's only up to k-means variability (PML's own values
//! change between faiss CPU and GPU runs).

use crate::{EvalError, Matrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::HashMap;

/// Default cap on Lloyd iterations; iteration also stops as soon as no point changes
/// cluster. (faiss, used by PML, runs a fixed 20 iterations.)
pub const KMEANS_MAX_ITER: usize = 100;

/// `‖a − b‖²` in f64. Four interleaved accumulators, combined in a fixed order, let the
/// compiler vectorise while keeping the result independent of threads and platform.
fn sq_dist(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ac, ar) = a.split_at(a.len() - a.len() % 4);
    let (bc, br) = b.split_at(ac.len());
    for (x, c) in ac.chunks_exact(4).zip(bc.chunks_exact(4)) {
        for l in 0..4 {
            let d = f64::from(x[l]) - c[l];
            acc[l] += d * d;
        }
    }
    for (&x, &c) in ar.iter().zip(br) {
        let d = f64::from(x) - c;
        acc[0] += d * d;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// Nearest centre of `x` (lowest index on ties) and its squared distance.
fn nearest(x: &[f32], centres: &[Vec<f64>]) -> (usize, f64) {
    let mut best = (0usize, f64::INFINITY);
    for (j, c) in centres.iter().enumerate() {
        let d = sq_dist(x, c);
        if d < best.1 {
            best = (j, d);
        }
    }
    best
}

/// k-means on the rows of `x` with squared Euclidean distance.
///
/// Initialisation: k-means++ (Arthur & Vassilvitskii 2007): the first centre is a
/// uniformly drawn row, each further centre is drawn with probability proportional to
/// the squared distance to the nearest centre chosen so far (uniformly when all
/// distances are 0). Then Lloyd iterations (assign to nearest centre, ties to the lower
/// index; move centres to their members' mean, accumulated in f64) until no assignment
/// changes or `max_iter` iterations. A cluster that becomes empty is re-seeded at the
/// point farthest from its current centre. Deterministic for a given `seed`
/// (ChaCha8) regardless of the thread count. Returns the cluster index of every row.
pub fn kmeans(x: &Matrix, k: usize, max_iter: usize, seed: u64) -> Result<Vec<usize>, EvalError> {
    let n = x.rows();
    if k == 0 || k > n {
        return Err(EvalError::Invalid(format!(
            "k-means: k = {k} clusters must lie in 1..={n} (number of rows)"
        )));
    }
    if let Some(r) = x.first_non_finite_row() {
        return Err(EvalError::Invalid(format!(
            "k-means: row {r} holds a NaN or infinite value"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let to_f64 = |i: usize| x.row(i).iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    let mut centres = vec![to_f64(rng.random_range(0..n))];
    let mut d2: Vec<f64> = (0..n).map(|i| sq_dist(x.row(i), &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let u = rng.random::<f64>() * total;
            let mut acc = 0.0;
            let mut pick = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                acc += d;
                if acc > u && d > 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.random_range(0..n)
        };
        let c = to_f64(pick);
        d2.par_iter_mut().enumerate().for_each(|(i, d)| {
            *d = d.min(sq_dist(x.row(i), &c));
        });
        centres.push(c);
    }

    let d = x.cols();
    let mut assign = vec![usize::MAX; n];
    for _ in 0..max_iter {
        let new: Vec<(usize, f64)> = (0..n)
            .into_par_iter()
            .map(|i| nearest(x.row(i), &centres))
            .collect();
        let changed = new.iter().zip(&assign).any(|(a, &b)| a.0 != b);
        for (a, nw) in assign.iter_mut().zip(&new) {
            *a = nw.0;
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0.0f64; d]; k];
        let mut counts = vec![0usize; k];
        for i in 0..n {
            counts[assign[i]] += 1;
            for (s, &v) in sums[assign[i]].iter_mut().zip(x.row(i)) {
                *s += f64::from(v);
            }
        }
        let mut far: Vec<(usize, f64)> = new
            .iter()
            .copied()
            .enumerate()
            .map(|(i, (_, dd))| (i, dd))
            .collect();
        // Farthest points first (lower index on ties) for re-seeding empty clusters.
        far.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut next_far = 0;
        for j in 0..k {
            if counts[j] > 0 {
                let inv = 1.0 / counts[j] as f64;
                centres[j] = sums[j].iter().map(|s| s * inv).collect();
            } else {
                centres[j] = to_f64(far[next_far].0);
                next_far = (next_far + 1).min(n - 1);
            }
        }
    }
    Ok(assign)
}

/// Sparse contingency table of two labelings: row sums `a`, column sums `b`, non-zero
/// cells `(i, j, n_ij)`.
struct Contingency {
    a: Vec<u64>,
    b: Vec<u64>,
    cells: Vec<(usize, usize, u64)>,
    n: u64,
}

fn dense_ids<T: std::hash::Hash + Eq + Copy>(v: &[T]) -> (Vec<usize>, usize) {
    let mut map = HashMap::new();
    let ids = v
        .iter()
        .map(|x| {
            let next = map.len();
            *map.entry(*x).or_insert(next)
        })
        .collect();
    (ids, map.len())
}

fn contingency(truth: &[i64], pred: &[usize]) -> Contingency {
    let (ti, nt) = dense_ids(truth);
    let (pi, np) = dense_ids(pred);
    let mut a = vec![0u64; nt];
    let mut b = vec![0u64; np];
    let mut cells: HashMap<(usize, usize), u64> = HashMap::new();
    for (&i, &j) in ti.iter().zip(&pi) {
        a[i] += 1;
        b[j] += 1;
        *cells.entry((i, j)).or_insert(0) += 1;
    }
    let mut cells: Vec<(usize, usize, u64)> =
        cells.into_iter().map(|((i, j), c)| (i, j, c)).collect();
    // Fixed summation order makes the result independent of hash-map iteration order.
    cells.sort_unstable();
    Contingency {
        a,
        b,
        cells,
        n: truth.len() as u64,
    }
}

/// `H = −Σ (cᵢ/N)(ln cᵢ − ln N)` over class counts, natural log (sklearn `_entropy`).
fn entropy(counts: &[u64]) -> f64 {
    if counts.len() <= 1 {
        return 0.0;
    }
    let n: u64 = counts.iter().sum();
    let ln_n = (n as f64).ln();
    -counts
        .iter()
        .map(|&c| (c as f64 / n as f64) * ((c as f64).ln() - ln_n))
        .sum::<f64>()
}

/// `MI = Σ_ij (n_ij/N) ln(N n_ij / (a_i b_j))`, with sklearn's guards: 0 when either
/// labeling has one cluster, terms smaller than f64 epsilon set to 0, result clipped at 0.
fn mutual_info(c: &Contingency) -> f64 {
    if c.a.len() == 1 || c.b.len() == 1 {
        return 0.0;
    }
    let n = c.n as f64;
    let ln_n = n.ln();
    let mut mi = 0.0f64;
    for &(i, j, nij) in &c.cells {
        let p = nij as f64 / n;
        let outer = (c.a[i] as f64) * (c.b[j] as f64);
        let t = p * ((nij as f64).ln() - ln_n) + p * (-outer.ln() + ln_n + ln_n);
        if t.abs() >= f64::EPSILON {
            mi += t;
        }
    }
    mi.max(0.0)
}

/// `ln(n!)`: summed logarithms below 256, Stirling's series (terms up to `n⁻⁷`, error
/// below 1e-20) above, so large arguments keep full f64 relative precision.
fn ln_factorial(n: u64) -> f64 {
    if n < 256 {
        return (2..=n).map(|k| (k as f64).ln()).sum();
    }
    let x = n as f64;
    let x2 = x * x;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x2)
        + 1.0 / (1260.0 * x * x2 * x2)
        - 1.0 / (1680.0 * x * x2 * x2 * x2)
}

/// Expected mutual information of two random labelings with the observed marginals
/// (Vinh, Epps & Bailey 2010, eq. 24a; the hypergeometric model scikit-learn uses):
/// `EMI = Σ_i Σ_j Σ_{n=max(1, a_i+b_j−N)}^{min(a_i,b_j)} (n/N) ln(N n/(a_i b_j)) ·
///   a_i! b_j! (N−a_i)! (N−b_j)! / (N! n! (a_i−n)! (b_j−n)! (N−a_i−b_j+n)!)`.
fn expected_mutual_info(c: &Contingency) -> f64 {
    if c.a.len() == 1 || c.b.len() == 1 {
        return 0.0;
    }
    let n = c.n;
    let nf = n as f64;
    let max_m = c.a.iter().chain(&c.b).copied().max().unwrap_or(0);
    let lf = |v: u64| ln_factorial(v);
    let ln_fact: Vec<f64> = (0..=n).into_par_iter().map(lf).collect();
    let ln_nf = ln_fact[n as usize];
    let ln_n = nf.ln();
    let ln_m: Vec<f64> = (0..=max_m).map(|m| (m.max(1) as f64).ln()).collect();
    c.a.par_iter()
        .map(|&ai| {
            let mut emi = 0.0f64;
            for &bj in &c.b {
                let start = 1.max((ai + bj).saturating_sub(n));
                let end = ai.min(bj);
                let fixed = ln_fact[ai as usize]
                    + ln_fact[bj as usize]
                    + ln_fact[(n - ai) as usize]
                    + ln_fact[(n - bj) as usize]
                    - ln_nf;
                let ln_ab = (ai as f64).ln() + (bj as f64).ln();
                for m in start..=end {
                    let term2 = ln_n + ln_m[m as usize] - ln_ab;
                    let gln = fixed
                        - ln_fact[m as usize]
                        - ln_fact[(ai - m) as usize]
                        - ln_fact[(bj - m) as usize]
                        - ln_fact[(n + m - ai - bj) as usize];
                    emi += (m as f64 / nf) * term2 * gln.exp();
                }
            }
            emi
        })
        .sum()
}

fn check_same_len(truth: &[i64], pred: &[usize]) -> Result<(), EvalError> {
    if truth.len() != pred.len() {
        return Err(EvalError::Shape(format!(
            "mutual information: {} true labels but {} cluster labels",
            truth.len(),
            pred.len()
        )));
    }
    Ok(())
}

/// Normalized mutual information with arithmetic averaging, as scikit-learn's
/// `normalized_mutual_info_score` default: `NMI = MI / ((H(U) + H(V)) / 2)`. Special cases
/// as sklearn: both labelings with one cluster (or empty) give 1; `MI = 0` gives 0.
pub fn nmi(truth: &[i64], pred: &[usize]) -> Result<f64, EvalError> {
    check_same_len(truth, pred)?;
    let c = contingency(truth, pred);
    if (c.a.len() == 1 && c.b.len() == 1) || truth.is_empty() {
        return Ok(1.0);
    }
    let mi = mutual_info(&c);
    if mi == 0.0 {
        return Ok(0.0);
    }
    Ok(mi / ((entropy(&c.a) + entropy(&c.b)) / 2.0))
}

/// Adjusted mutual information with arithmetic averaging, as scikit-learn's
/// `adjusted_mutual_info_score` default:
/// `AMI = (MI − EMI) / ((H(U) + H(V))/2 − EMI)` with the exact expected mutual
/// information `EMI` (hypergeometric model, Vinh et al. 2010 eq. 24a).
/// Special cases as sklearn: both labelings with one cluster (or empty) give 1; exactly
/// one of them with one cluster gives 0; numerator and denominator are kept at least
/// f64 epsilon away from 0 (sign preserved).
pub fn ami(truth: &[i64], pred: &[usize]) -> Result<f64, EvalError> {
    check_same_len(truth, pred)?;
    let c = contingency(truth, pred);
    if (c.a.len() == 1 && c.b.len() == 1) || truth.is_empty() {
        return Ok(1.0);
    }
    if c.a.len() == 1 || c.b.len() == 1 {
        return Ok(0.0);
    }
    let mi = mutual_info(&c);
    let emi = expected_mutual_info(&c);
    let normalizer = (entropy(&c.a) + entropy(&c.b)) / 2.0;
    let away_from_zero = |v: f64| {
        if v < 0.0 {
            v.min(-f64::EPSILON)
        } else {
            v.max(f64::EPSILON)
        }
    };
    Ok(away_from_zero(mi - emi) / away_from_zero(normalizer - emi))
}

/// Clusters `embeddings` with [`kmeans`] (k = number of distinct `labels`,
/// [`KMEANS_MAX_ITER`] iterations at most, `seed`) and returns `(NMI, AMI)` of the
/// partition against `labels` (PML's clustering metrics).
pub fn cluster_scores(
    embeddings: &Matrix,
    labels: &[i64],
    seed: u64,
) -> Result<(f64, f64), EvalError> {
    if labels.len() != embeddings.rows() {
        return Err(EvalError::Shape(format!(
            "clustering: {} labels for {} embedding rows",
            labels.len(),
            embeddings.rows()
        )));
    }
    let k = dense_ids(labels).1;
    let pred = kmeans(embeddings, k, KMEANS_MAX_ITER, seed)?;
    Ok((nmi(labels, &pred)?, ami(labels, &pred)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_factorial_is_continuous_across_the_switch() {
        let direct: f64 = (2..=300u64).map(|k| (k as f64).ln()).sum();
        assert!((ln_factorial(300) - direct).abs() < 1e-10 * direct);
        let d255: f64 = (2..=255u64).map(|k| (k as f64).ln()).sum();
        assert!((ln_factorial(256) - d255 - 256f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn entropy_of_uniform_split() {
        assert!((entropy(&[5, 5]) - std::f64::consts::LN_2).abs() < 1e-15);
        assert_eq!(entropy(&[7]), 0.0);
    }
}
