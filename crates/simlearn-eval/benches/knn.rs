//! Exact-kNN micro benchmark (plain `Instant` timing, no harness).
//!
//! `cargo bench -p simlearn-eval --bench knn -- [CASE]` where CASE is one of
//! `small` (default: 8,192 × 256 leave-one-out and 2,048 × 65,536 × 128),
//! `sop` (60,502 × 512 leave-one-out, k = 12, the Stanford Online Products shape),
//! `big` (10,000 queries × 1,000,000 gallery × 128, k = 10),
//! `gemm` (raw GEMM on one tile, 1 thread and gemm's own 2-thread mode, for comparison),
//! `scan` (d = 8, where the top-k filter rather than GEMM dominates).
//! Data are seeded Gaussian vectors; GFLOP/s counts `2·d` flops per computed score, i.e. the GEMM
//! work actually done (half the Gram matrix in leave-one-out mode). `K=100` overrides the `sop`
//! case's k (the CLI's `--k 1,10,100` searches k = 100); `BLOCK_ROWS` the block size. Each line
//! names the score kernel that ran (`avx512-fused` or `gemm-portable`).
//! Peak memory: run the bench binary under `/usr/bin/time -v`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use simlearn_eval::knn::{kernel_name, knn, knn_leave_one_out, KnnConfig, Similarity};
use simlearn_eval::Matrix;
use std::time::Instant;

fn gauss(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..n * d)
        .map(|_| {
            let u1: f64 = rng.random_range(1e-12..1.0);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Matrix::new(n, d, data).unwrap()
}

fn loo(n: usize, d: usize, k: usize, sim: Similarity, block_rows: usize) {
    let m = gauss(n, d, 1);
    let cfg = KnnConfig {
        k,
        similarity: sim,
        block_rows,
    };
    let t = Instant::now();
    let nb = knn_leave_one_out(&m, &cfg, None).unwrap();
    let s = t.elapsed().as_secs_f64();
    // The upper triangle of the Gram matrix: n(n + 1)/2 scores (diagonal blocks are computed
    // by whole micro-tiles, a few percent more).
    let flops = 2.0 * d as f64 * (n as f64 * (n as f64 + 1.0) / 2.0);
    println!(
        "leave-one-out n={n} d={d} k={k} {:?} block={block_rows} threads={} kernel={}: {s:.2} s, {:.1} GFLOP/s (first idx {})",
        sim,
        rayon::current_num_threads(),
        kernel_name(),
        flops / s / 1e9,
        nb.row(0).0[0]
    );
}

fn separate(nq: usize, ng: usize, d: usize, k: usize, block_rows: usize) {
    let q = gauss(nq, d, 2);
    let g = gauss(ng, d, 3);
    let cfg = KnnConfig {
        k,
        similarity: Similarity::Cosine,
        block_rows,
    };
    let t = Instant::now();
    let nb = knn(&q, &g, &cfg, None).unwrap();
    let s = t.elapsed().as_secs_f64();
    let flops = 2.0 * d as f64 * nq as f64 * ng as f64;
    println!(
        "query/gallery nq={nq} ng={ng} d={d} k={k} cosine block={block_rows} threads={} kernel={}: {s:.2} s, {:.1} GFLOP/s (first idx {})",
        rayon::current_num_threads(),
        kernel_name(),
        flops / s / 1e9,
        nb.row(0).0[0]
    );
}

/// Raw GEMM throughput on one `m × n × d` tile (the kNN's inner kernel), single-threaded as the
/// kNN runs it or with gemm's own rayon parallelism, to separate GEMM speed from top-k overhead.
fn gemm_only(m: usize, n: usize, d: usize, reps: usize, threads: usize) {
    let a = gauss(m, d, 4);
    let b = gauss(n, d, 5);
    let mut out = vec![0f32; m * n];
    let t = Instant::now();
    for _ in 0..reps {
        // SAFETY: row-major A (m×d), B (n×d) read as Bᵀ, row-major out (m×n); sizes match.
        unsafe {
            gemm::gemm(
                m,
                n,
                d,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.data().as_ptr(),
                1,
                d as isize,
                b.data().as_ptr(),
                d as isize,
                1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
    }
    let s = t.elapsed().as_secs_f64();
    let flops = 2.0 * (m * n * d * reps) as f64;
    println!(
        "gemm {m}x{n}x{d} threads={threads}: {:.1} ms per tile, {:.1} GFLOP/s (checksum {})",
        s * 1e3 / reps as f64,
        flops / s / 1e9,
        out[0]
    );
}

fn main() {
    let case = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "small".into());
    let block: usize = std::env::var("BLOCK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    match case.as_str() {
        "sop" => {
            let k = std::env::var("K")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(12);
            loo(60_502, 512, k, Similarity::Cosine, block)
        }
        "big" => separate(10_000, 1_000_000, 128, 10, block),
        "scan" => {
            // d = 8: GEMM is cheap, so this measures the per-score top-k overhead.
            loo(16_384, 8, 12, Similarity::Cosine, block);
            loo(16_384, 8, 12, Similarity::Dot, block);
        }
        "gemm" => {
            for threads in [1, 2] {
                gemm_only(2048, 2048, 512, 5, threads);
                gemm_only(2048, 4096, 128, 5, threads);
            }
        }
        _ => {
            loo(8_192, 256, 12, Similarity::Cosine, block);
            loo(8_192, 256, 12, Similarity::SqEuclidean, block);
            separate(2_048, 65_536, 128, 10, block);
        }
    }
}
