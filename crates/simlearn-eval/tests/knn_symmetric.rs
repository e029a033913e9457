//! Leave-one-out search computes only the upper triangle of the score matrix and feeds every
//! tile to both its rows and its columns. These tests check it against the plain path: a
//! separate-gallery search of the set against itself for k + 1 neighbours, with the query's own
//! index removed (or the last entry, when the query is not among them) — which is by
//! definition the top-k over all other items. Data have exact ties and duplicate rows; block
//! sizes and set sizes are chosen so that blocks end at odd places, the last block is small,
//! and sets are smaller than one block.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use simlearn_eval::knn::{knn, knn_leave_one_out, KnnConfig, Neighbours, Similarity};
use simlearn_eval::Matrix;

const SIMS: [Similarity; 3] = [Similarity::Cosine, Similarity::Dot, Similarity::SqEuclidean];

/// Small integers (exact in f32 and f64, so scores tie exactly), every 4th row a copy of an
/// earlier one, one zero row, one row repeated many times.
fn tie_data(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<Vec<f32>> = (0..n)
        .map(|_| (0..d).map(|_| rng.random_range(-2i32..=2) as f32).collect())
        .collect();
    for i in (4..n).step_by(4) {
        let src = rng.random_range(0..i);
        rows[i] = rows[src].clone();
    }
    if n > 2 {
        rows[n / 2] = vec![0.0; d];
    }
    for i in (7..n).step_by(11) {
        rows[i] = rows[3.min(n - 1)].clone();
    }
    Matrix::from_rows(&rows).unwrap()
}

/// Gaussian rows with some exact duplicates (continuous scores, ties only between copies).
fn gauss_dup(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            (0..d)
                .map(|_| {
                    let u1: f64 = rng.random_range(1e-12..1.0);
                    let u2: f64 = rng.random();
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect()
        })
        .collect();
    for i in (5..n).step_by(9) {
        rows[i] = rows[i - 5].clone();
    }
    Matrix::from_rows(&rows).unwrap()
}

/// The plain path: search the set against itself for k + 1, drop the query's own index.
fn plain_loo(m: &Matrix, k: usize, sim: Similarity, block_rows: usize) -> Neighbours {
    let cfg = KnnConfig {
        k: k + 1,
        similarity: sim,
        block_rows,
    };
    let full = knn(m, m, &cfg, None).unwrap();
    let mut indices = Vec::with_capacity(m.rows() * k);
    let mut scores = Vec::with_capacity(m.rows() * k);
    for q in 0..m.rows() {
        let (idx, sc) = full.row(q);
        let own = idx.iter().position(|&j| j as usize == q).unwrap_or(k);
        for o in (0..=k).filter(|&o| o != own) {
            indices.push(idx[o]);
            scores.push(sc[o]);
        }
    }
    Neighbours { k, indices, scores }
}

fn loo(m: &Matrix, k: usize, sim: Similarity, block_rows: usize) -> Neighbours {
    let cfg = KnnConfig {
        k,
        similarity: sim,
        block_rows,
    };
    knn_leave_one_out(m, &cfg, None).unwrap()
}

#[test]
fn symmetric_equals_plain_with_ties_and_duplicates() {
    // 203 rows: with 48-row block alignment, blocks of 48/96/... end mid-way and the last
    // block is short.
    for (seed, (n, d)) in [(203, 7), (97, 16), (130, 33)].into_iter().enumerate() {
        let m = tie_data(n, d, seed as u64);
        for sim in SIMS {
            for k in [1, 4, 13] {
                let want = plain_loo(&m, k, sim, 64);
                for block_rows in [1, 49, 100, 4096] {
                    let got = loo(&m, k, sim, block_rows);
                    assert_eq!(got, want, "{sim:?} n={n} d={d} k={k} block={block_rows}");
                }
            }
        }
    }
}

#[test]
fn symmetric_equals_plain_on_gaussian_data_with_duplicates() {
    let m = gauss_dup(611, 40, 9);
    for sim in SIMS {
        let want = plain_loo(&m, 10, sim, 2048);
        for block_rows in [48, 97, 300, 2048] {
            assert_eq!(
                loo(&m, 10, sim, block_rows),
                want,
                "{sim:?} block={block_rows}"
            );
        }
    }
}

#[test]
fn set_smaller_than_one_block_and_tiny_sets() {
    for n in [2, 3, 5, 17, 47, 48, 49] {
        let m = tie_data(n, 5, n as u64);
        for sim in SIMS {
            for k in [1, n - 1] {
                let want = plain_loo(&m, k, sim, 2048);
                assert_eq!(loo(&m, k, sim, 2048), want, "{sim:?} n={n} k={k}");
                assert_eq!(loo(&m, k, sim, 1), want, "{sim:?} n={n} k={k} block 1");
            }
        }
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let m = tie_data(500, 12, 4);
    for sim in SIMS {
        let want = plain_loo(&m, 20, sim, 2048);
        for threads in [1, 2, 3, 5] {
            let got = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| loo(&m, 20, sim, 64));
            assert_eq!(got, want, "{sim:?} threads={threads}");
        }
    }
}

#[test]
fn separate_gallery_split_into_parts_equals_one_pass() {
    // Few queries, large gallery: the search splits the gallery into parts whose candidate
    // lists are merged; the result must not depend on the thread count and must equal the
    // exact brute force.
    let g = tie_data(9000, 6, 21);
    let q = tie_data(30, 6, 22);
    for sim in SIMS {
        let cfg = KnnConfig {
            k: 25,
            similarity: sim,
            block_rows: 2048,
        };
        let base = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| knn(&q, &g, &cfg, None).unwrap());
        for threads in [2, 4] {
            let got = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| knn(&q, &g, &cfg, None).unwrap());
            assert_eq!(got, base, "{sim:?} threads={threads}");
        }
        for i in 0..q.rows() {
            let mut all: Vec<(f64, u32)> = (0..g.rows())
                .map(|j| {
                    (
                        simlearn_eval::knn::exact_score(sim, q.row(i), g.row(j)),
                        j as u32,
                    )
                })
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all[..25].iter().map(|e| e.1).collect();
            assert_eq!(base.row(i).0, &want[..], "{sim:?} query {i}");
        }
    }
}
