//! Exact, bounded-memory k-nearest-neighbour search.
//!
//! # Algorithm
//!
//! Scores are computed tile by tile: a tile is `block_rows` query rows × a chunk of gallery rows,
//! filled by one single-threaded f32 GEMM (the pure-Rust `gemm` crate); tiles run in parallel on
//! rayon. Each query keeps a bounded top-k (binary heap keyed by *(score desc, gallery index asc)*),
//! so peak memory is `threads × tile + queries × k`, independent of how many queries stream through.
//!
//! **Exactness and determinism.** An f32 GEMM result depends on its blocking and summation order,
//! so tiling and thread count could flip near-ties. Here the GEMM score only *filters*: with
//! `u = 2⁻²⁴` the GEMM error of a `d`-dimensional dot product is at most
//! `γ_d·Σ|q_t g_t| ≤ (d+1)·u·‖q‖‖g‖` (Higham, *Accuracy and Stability of Numerical Algorithms*,
//! §3.1, for any summation order), and the filter uses twice that bound. Every candidate that could
//! enter a query's top-k is re-scored in f64 by one fixed-order kernel ([`exact_score`]), and the
//! top-k is taken on those f64 scores with ties broken by the lower gallery index. The result is
//! therefore the exact top-k of a deterministic score function and does not depend on block size,
//! tile order or thread count.
//!
//! **Scores** ("larger = closer"):
//! * Cosine ([`Similarity::Cosine`]) — `q·g / (‖q‖‖g‖)`; a zero row has cosine 0 with everything; a
//!   norm within 1e-6 of 1 counts as 1 (input already normalised in f32, see `cosine_norm`).
//! * Dot ([`Similarity::Dot`]) — `q·g`.
//! * SqEuclidean ([`Similarity::SqEuclidean`]) — `−‖q − g‖²`, computed exactly as `−Σ(q_t − g_t)²` (the GEMM
//!   filter uses `‖q‖² + ‖g‖² − 2q·g`).
//!
//! **Leave-one-out symmetry.** When the query set is the gallery, the Gram matrix is symmetric:
//! only tiles `(I, J)` with `J ≥ I` are computed, and an off-diagonal tile feeds both the top-k of
//! its rows (block `I`) and, transposed, of its columns (block `J`). This halves the GEMM work.

#[path = "knn_kernel.rs"]
mod kernel;

use crate::{EvalError, Matrix};
use kernel::{MR, NR, PANEL};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;

/// How closeness between two embeddings is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    /// Cosine similarity `q·g / (‖q‖‖g‖)` (dot product of L2-normalised vectors), the default in
    /// PML's `AccuracyCalculator` and OML.
    #[default]
    Cosine,
    /// Raw inner product `q·g` (PML 3's un-normalised `DotProductSimilarity`).
    Dot,
    /// Squared Euclidean distance, reported as the score `−‖q − g‖²`.
    SqEuclidean,
}

impl Similarity {
    /// Parses `cosine`, `dot` or `sqeuclidean` (also `sq_euclidean`, `l2sq`).
    pub fn parse(s: &str) -> Result<Self, EvalError> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Ok(Self::Cosine),
            "dot" | "ip" | "inner" => Ok(Self::Dot),
            "sqeuclidean" | "sq_euclidean" | "sq-euclidean" | "l2sq" => Ok(Self::SqEuclidean),
            _ => Err(EvalError::Invalid(format!(
                "unknown similarity {s:?}: expected cosine, dot or sqeuclidean"
            ))),
        }
    }

    /// The lower-case name accepted by [`Similarity::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Dot => "dot",
            Self::SqEuclidean => "sqeuclidean",
        }
    }
}

/// Parameters of an exact kNN search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnnConfig {
    /// Neighbours per query (default 10).
    pub k: usize,
    /// Score function (default [`Similarity::Cosine`]).
    pub similarity: Similarity,
    /// Query rows per tile (default 2048). Each worker thread holds one f32 score tile:
    /// `block_rows × max(2²³ / block_rows, 256)` scores with a separate gallery (32 MiB at the
    /// default), `block_rows²` scores in leave-one-out mode (16 MiB at the default).
    pub block_rows: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 10,
            similarity: Similarity::Cosine,
            block_rows: 2048,
        }
    }
}

/// The k nearest gallery items of every query.
///
/// Row `q` holds the k nearest gallery items of query `q`, best first. `scores` are
/// "larger = closer": similarity for Cosine/Dot, *negative* squared distance for SqEuclidean.
/// Ties (equal f64 scores) are ordered by lower gallery index first. Scores are the exact f64
/// scores rounded to f32, so two neighbours may show equal f32 scores while their order was
/// decided by the f64 values.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    /// Neighbours per query.
    pub k: usize,
    /// `n_queries × k` gallery indices, row-major.
    pub indices: Vec<u32>,
    /// `n_queries × k` scores matching `indices`.
    pub scores: Vec<f32>,
}

impl Neighbours {
    /// Number of queries.
    pub fn n_queries(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    /// Gallery indices and scores of query `q`, best first.
    pub fn row(&self, q: usize) -> (&[u32], &[f32]) {
        let r = q * self.k..(q + 1) * self.k;
        (&self.indices[r.clone()], &self.scores[r])
    }
}

/// Progress callback: `progress(done_queries, total_queries)`. In leave-one-out mode, "done" is the
/// share of the GEMM work finished, expressed in queries.
pub type Progress<'a> = Option<&'a (dyn Fn(usize, usize) + Sync)>;

/// Gallery rows per tile are chosen so that a tile holds about this many scores (32 MiB of f32,
/// the portable path's score buffer).
const TILE_ELEMS: usize = 8 << 20;

/// Rows per leave-one-out block (at most; `block_rows` may ask for fewer). With the fused kernel
/// a block's packed operand is `1024 · d · 4` bytes and no score tile is ever stored.
const LOO_BLOCK: usize = 1024;

/// Exact kNN of `queries` against a separate `gallery` (In-Shop style).
///
/// Errors: empty sets, zero dimension, dimension mismatch, NaN/Inf rows, `k == 0`,
/// `k > gallery rows` (the CLI clamps with a warning instead), `block_rows == 0`, and values so
/// large that f32 products would overflow (Dot/SqEuclidean: `max‖q‖·max‖g‖ > 10³⁶`).
pub fn knn(
    queries: &Matrix,
    gallery: &Matrix,
    cfg: &KnnConfig,
    progress: Progress<'_>,
) -> Result<Neighbours, EvalError> {
    knn_with(queries, gallery, cfg, progress, Engine::best())
}

fn knn_with(
    queries: &Matrix,
    gallery: &Matrix,
    cfg: &KnnConfig,
    progress: Progress<'_>,
    engine: Engine,
) -> Result<Neighbours, EvalError> {
    check_set(queries, "query")?;
    check_set(gallery, "gallery")?;
    if queries.cols() != gallery.cols() {
        return Err(EvalError::Shape(format!(
            "query embeddings have dimension {}, gallery embeddings {}",
            queries.cols(),
            gallery.cols()
        )));
    }
    check_cfg(cfg)?;
    if cfg.k > gallery.rows() {
        return Err(EvalError::Invalid(format!(
            "k = {} exceeds the gallery size {}",
            cfg.k,
            gallery.rows()
        )));
    }
    let q = Side::new(queries, cfg.similarity);
    let g = Side::new(gallery, cfg.similarity);
    check_range(&q, &g, cfg.similarity)?;
    run_separate(&q, &g, cfg, progress, engine)
}

/// Exact kNN with the query set equal to the gallery: item `i` never appears in its own list
/// (excluded by index, never by distance, so exact duplicates of `i` are still found). Requires
/// `1 ≤ k ≤ n − 1`. Only the upper triangle of the score matrix is computed (see the module
/// docs).
pub fn knn_leave_one_out(
    items: &Matrix,
    cfg: &KnnConfig,
    progress: Progress<'_>,
) -> Result<Neighbours, EvalError> {
    knn_leave_one_out_with(items, cfg, progress, Engine::best())
}

fn knn_leave_one_out_with(
    items: &Matrix,
    cfg: &KnnConfig,
    progress: Progress<'_>,
    engine: Engine,
) -> Result<Neighbours, EvalError> {
    check_set(items, "embedding")?;
    check_cfg(cfg)?;
    if cfg.k >= items.rows() {
        return Err(EvalError::Invalid(format!(
            "k = {} but leave-one-out over {} items allows at most k = {}",
            cfg.k,
            items.rows(),
            items.rows() - 1
        )));
    }
    let s = Side::new(items, cfg.similarity);
    check_range(&s, &s, cfg.similarity)?;
    run_loo(&s, cfg, progress, engine)
}

/// The score kernel this CPU uses: `"avx512-fused"` (a register-blocked AVX-512 GEMM with the
/// top-k filter fused in, chosen at run time) or `"gemm-portable"` (the `gemm` crate's GEMM into
/// a score tile, then a scan). Both give identical results; benchmarks report which one ran.
pub fn kernel_name() -> &'static str {
    Engine::best().name()
}

/// The exact f64 score used to rank neighbours; see the module docs for the formulas.
///
/// The sums run over 8 interleaved f64 accumulators combined in a fixed order, so the value is
/// the same on every platform and symmetric in its arguments.
pub fn exact_score(similarity: Similarity, a: &[f32], b: &[f32]) -> f64 {
    match similarity {
        Similarity::Dot => dot_f64(a, b),
        Similarity::Cosine => {
            let den = cosine_norm(dot_f64(a, a).sqrt()) * cosine_norm(dot_f64(b, b).sqrt());
            if den > 0.0 {
                dot_f64(a, b) / den
            } else {
                0.0
            }
        }
        Similarity::SqEuclidean => -sqdist_f64(a, b),
    }
}

/// The norm a cosine divides by: rows already unit-length to f32 precision (|‖x‖ − 1| ≤ 1e-6,
/// what normalising in f32 leaves behind) count as exactly 1. Dividing them by their f64 norm
/// would only reorder near-ties at the 1e-7 level, and this way pre-normalised embeddings rank
/// exactly as by their dot product, as PML's and faiss's L2/inner-product searches rank them.
fn cosine_norm(n: f64) -> f64 {
    if (n - 1.0).abs() <= 1e-6 {
        1.0
    } else {
        n
    }
}

fn check_set(m: &Matrix, what: &str) -> Result<(), EvalError> {
    if m.rows() == 0 {
        return Err(EvalError::Shape(format!("the {what} set is empty")));
    }
    if m.cols() == 0 {
        return Err(EvalError::Shape(format!(
            "the {what} embeddings have dimension 0"
        )));
    }
    if m.rows() > u32::MAX as usize {
        return Err(EvalError::Shape(format!(
            "the {what} set has {} rows, more than the 2^32 − 1 supported",
            m.rows()
        )));
    }
    if let Some(r) = m.first_non_finite_row() {
        return Err(EvalError::Invalid(format!(
            "{what} row {r} contains NaN or Inf"
        )));
    }
    Ok(())
}

fn check_cfg(cfg: &KnnConfig) -> Result<(), EvalError> {
    if cfg.k == 0 {
        return Err(EvalError::Invalid("k must be at least 1".into()));
    }
    if cfg.block_rows == 0 {
        return Err(EvalError::Invalid("block_rows must be at least 1".into()));
    }
    Ok(())
}

/// f32 GEMM partial sums are bounded by `‖q‖‖g‖`; refuse inputs where they could overflow, since
/// the filter's error bound would no longer hold. Cosine GEMMs run on normalised rows.
fn check_range(q: &Side<'_>, g: &Side<'_>, sim: Similarity) -> Result<(), EvalError> {
    const LIMIT: f64 = 1e36;
    let bound = match sim {
        Similarity::Cosine => return Ok(()),
        Similarity::Dot => q.max_norm * g.max_norm,
        Similarity::SqEuclidean => q.max_norm * q.max_norm + g.max_norm * g.max_norm,
    };
    if bound > LIMIT {
        return Err(EvalError::Invalid(format!(
            "embedding norms up to {:.3e} would overflow f32 {} scores; rescale the embeddings",
            q.max_norm.max(g.max_norm),
            sim.name()
        )));
    }
    Ok(())
}

/// One input set with the per-row quantities the filter needs.
struct Side<'a> {
    m: &'a Matrix,
    /// `‖x‖₂` per row, f64.
    norms: Vec<f64>,
    /// `‖x‖²` rounded to f32 (SqEuclidean approximate scores).
    sq32: Vec<f32>,
    max_norm: f64,
}

impl<'a> Side<'a> {
    fn new(m: &'a Matrix, sim: Similarity) -> Self {
        let norms: Vec<f64> = (0..m.rows())
            .into_par_iter()
            .map(|i| {
                let n = dot_f64(m.row(i), m.row(i)).sqrt();
                if sim == Similarity::Cosine {
                    cosine_norm(n)
                } else {
                    n
                }
            })
            .collect();
        let sq32 = if sim == Similarity::SqEuclidean {
            norms.iter().map(|n| (n * n) as f32).collect()
        } else {
            Vec::new()
        };
        let max_norm = norms.iter().cloned().fold(0.0, f64::max);
        Self {
            m,
            norms,
            sq32,
            max_norm,
        }
    }
}

/// Which score kernel runs (results are identical; only speed differs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    /// The `gemm` crate's GEMM into a score tile, then a scan (every CPU).
    Portable,
    /// The fused AVX-512 micro-kernel with the filter in registers (`knn_kernel.rs`).
    Fused,
}

impl Engine {
    fn best() -> Self {
        if kernel::available() {
            Engine::Fused
        } else {
            Engine::Portable
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Portable => "gemm-portable",
            Engine::Fused => "avx512-fused",
        }
    }
}

/// A candidate neighbour: its approximate (GEMM) score and gallery index.
#[derive(Clone, Copy)]
struct Cand {
    s: f32,
    idx: u32,
}

/// Candidate lists of one block of queries (rows `rows` of the query set).
///
/// A list keeps every gallery item whose GEMM score reached the row's threshold when it was
/// offered. When it grows to `limit` entries it is pruned: with `a_k` the k-th largest GEMM score
/// seen so far and `δ` the GEMM error bound, the exact top-k can only contain items with GEMM
/// score `≥ a_k − 2δ` (k items have exact score `≥ a_k − δ`, and each GEMM score is within `δ` of
/// its exact score), and `a_k` only grows, so everything below `a_k − 2δ` is dropped for good and
/// becomes the new threshold. Exact scores are computed once, at the end, for the survivors.
struct BlockState {
    rows: std::ops::Range<usize>,
    k: usize,
    cand: Vec<Vec<Cand>>,
    /// Per local row: GEMM scores below this cannot enter the top-k (`−∞` until the first
    /// prune). `MR` extra `+∞` entries let the kernel read a full micro-tile past the last row.
    thr: Vec<f32>,
    /// Per local row: `2δ`.
    slack: Vec<f64>,
    /// Per local row: the list length that triggers the next prune.
    limit: Vec<usize>,
}

/// First prune point: twice k (at least k + 16), so that pruning costs O(1) per candidate.
fn base_limit(k: usize) -> usize {
    (2 * k).max(k + 16)
}

impl BlockState {
    fn new(rows: std::ops::Range<usize>, k: usize, delta: &[f64]) -> Self {
        let m = rows.len();
        let cap = base_limit(k);
        let mut thr = vec![f32::NEG_INFINITY; m + MR];
        thr[m..].fill(f32::INFINITY);
        Self {
            cand: (0..m).map(|_| Vec::with_capacity(cap)).collect(),
            thr,
            slack: delta[rows.clone()].iter().map(|d| 2.0 * d).collect(),
            limit: vec![cap; m],
            rows,
            k,
        }
    }

    /// Offers gallery item `idx` with GEMM score `s` to local query `r`.
    #[inline]
    fn push(&mut self, r: usize, s: f32, idx: u32) {
        if s >= self.thr[r] {
            let v = &mut self.cand[r];
            v.push(Cand { s, idx });
            if v.len() >= self.limit[r] {
                self.prune(r);
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn prune(&mut self, r: usize) {
        let k = self.k;
        let v = &mut self.cand[r];
        if v.len() <= k {
            return;
        }
        v.select_nth_unstable_by(k - 1, |a, b| b.s.total_cmp(&a.s));
        let t = f32_at_most(v[k - 1].s as f64 - self.slack[r]);
        if t > self.thr[r] {
            self.thr[r] = t;
        }
        let t = self.thr[r];
        v.retain(|c| c.s >= t);
        // Many near-ties can keep a list long: move the next prune out so the work stays linear.
        self.limit[r] = base_limit(k).max(2 * v.len());
    }

    /// Adds the candidates another part of the gallery produced for the same queries.
    fn merge(&mut self, other: BlockState) {
        for (r, list) in other.cand.into_iter().enumerate() {
            self.thr[r] = self.thr[r].max(other.thr[r]);
            for c in list {
                self.push(r, c.s, c.idx);
            }
        }
    }

    /// Re-scores the survivors exactly and writes the top-k (exact score desc, index asc).
    /// Returns false if a list holds fewer than k items (an internal error).
    fn finish(
        mut self,
        q: &Side<'_>,
        g: &Side<'_>,
        sim: Similarity,
        indices: &mut [u32],
        scores: &mut [f32],
    ) -> bool {
        let k = self.k;
        let mut exact: Vec<(f64, u32)> = Vec::new();
        for r in 0..self.rows.len() {
            self.prune(r);
            let i = self.rows.start + r;
            exact.clear();
            exact.extend(
                self.cand[r]
                    .iter()
                    .map(|c| (exact_pair(q, g, sim, i, c.idx as usize), c.idx)),
            );
            if exact.len() < k {
                return false;
            }
            exact.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (o, &(e, j)) in exact[..k].iter().enumerate() {
                indices[r * k + o] = j;
                scores[r * k + o] = e as f32;
            }
            self.cand[r] = Vec::new();
        }
        true
    }
}

/// Same formulas as [`exact_score`], with the row norms precomputed by the same kernel.
#[inline]
fn exact_pair(q: &Side<'_>, g: &Side<'_>, sim: Similarity, i: usize, j: usize) -> f64 {
    let (a, b) = (q.m.row(i), g.m.row(j));
    match sim {
        Similarity::Dot => dot_f64(a, b),
        Similarity::Cosine => {
            let den = q.norms[i] * g.norms[j];
            if den > 0.0 {
                dot_f64(a, b) / den
            } else {
                0.0
            }
        }
        Similarity::SqEuclidean => -sqdist_f64(a, b),
    }
}

/// The largest f32 not above `x`.
fn f32_at_most(x: f64) -> f32 {
    let f = x as f32;
    if f as f64 > x {
        f.next_down()
    } else {
        f
    }
}

/// Per-row GEMM error allowance `2·(2d + 16)·u·scale(row)` plus an underflow term; the scale is
/// `‖x‖·max‖y‖` for Dot, 1 for Cosine (rows normalised) and `‖x‖² + max‖y‖²` for SqEuclidean.
/// The factor 2 over the `(d + 1)·u` dot bound covers normalisation rounding, the f32 rounding of
/// `‖x‖²` and the final subtraction.
fn deltas(side: &Side<'_>, other_max: f64, sim: Similarity) -> Vec<f64> {
    let d = side.m.cols() as f64;
    let u = f32::EPSILON as f64 / 2.0;
    let rel = 2.0 * (2.0 * d + 16.0) * u;
    // Subnormal products/sums lose up to 2^-149 each, absolutely.
    let abs = (d + 2.0) * 2f64.powi(-148);
    side.norms
        .iter()
        .map(|&n| {
            let scale = match sim {
                Similarity::Cosine => 1.0,
                Similarity::Dot => n * other_max,
                Similarity::SqEuclidean => n * n + other_max * other_max,
            };
            rel * scale + abs
        })
        .collect()
}

/// At most `nb` blocks over `n` rows; every block starts at a multiple of `MR` (so the packed
/// operand of a block is whole micro-panels) and block sizes differ by at most one micro-panel.
fn block_bounds(n: usize, nb: usize) -> Vec<std::ops::Range<usize>> {
    let units = n.div_ceil(MR);
    let nb = nb.clamp(1, units.max(1));
    let (per, rem) = (units / nb, units % nb);
    let mut out = Vec::with_capacity(nb);
    let mut u0 = 0;
    for b in 0..nb {
        let u1 = u0 + per + usize::from(b < rem);
        out.push(u0 * MR..(u1 * MR).min(n));
        u0 = u1;
    }
    out
}

/// Leave-one-out schedule: every block pair `(I, J)`, `I < J`, exactly once, in rounds of
/// pairwise disjoint blocks (the circle method; a dummy block when `nb` is odd), then one round
/// of the diagonal tiles. Tiles of one round never share a block, so they run in parallel
/// without waiting for each other's top-k state.
fn rounds(nb: usize) -> Vec<Vec<(usize, usize)>> {
    let m = nb + nb % 2;
    let mut out = Vec::new();
    if m >= 2 {
        for r in 0..m - 1 {
            let mut round = Vec::with_capacity(m / 2);
            let pairs = std::iter::once((r, m - 1))
                .chain((1..m / 2).map(|i| ((r + i) % (m - 1), (r + m - 1 - i) % (m - 1))));
            for (a, b) in pairs {
                if a < nb && b < nb {
                    round.push((a.min(b), a.max(b)));
                }
            }
            out.push(round);
        }
    }
    out.push((0..nb).map(|i| (i, i)).collect());
    out
}

/// The top-k state a tile's columns feed, besides its rows'.
enum Cols<'s> {
    /// Separate gallery: columns are not queries.
    None,
    /// Leave-one-out diagonal tile: columns are the rows' own block (pairs with column > row).
    Same,
    /// Leave-one-out off-diagonal tile: the columns' block.
    Other(&'s mut BlockState),
}

/// Score pairs one tile stands for (progress accounting).
fn tile_work(m: usize, n: usize, diag: bool) -> u64 {
    if diag {
        (m * (m + 1) / 2) as u64
    } else {
        (m * n) as u64
    }
}

/// Reports progress in queries from score pairs done, never backwards.
struct Tracker<'a> {
    progress: Progress<'a>,
    n_queries: usize,
    total: u64,
    done: AtomicU64,
    last: Mutex<usize>,
}

impl Tracker<'_> {
    fn add(&self, w: u64) {
        if let Some(p) = self.progress {
            let w = self.done.fetch_add(w, AtomicOrdering::Relaxed) + w;
            let done = ((w as u128 * self.n_queries as u128) / self.total.max(1) as u128) as usize;
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if done > *last {
                *last = done;
                p(done, self.n_queries);
            }
        }
    }
}

/// Per-thread scratch of both engines.
#[derive(Default)]
struct Scratch {
    bufs: TileBufs,
    /// Packed gallery chunk (fused engine, separate gallery).
    pb: Vec<f32>,
    micro: kernel::MicroOut,
}

fn run_loo(
    s: &Side<'_>,
    cfg: &KnnConfig,
    progress: Progress<'_>,
    engine: Engine,
) -> Result<Neighbours, EvalError> {
    let n = s.m.rows();
    let (k, sim) = (cfg.k, cfg.similarity);
    let threads = rayon::current_num_threads();
    // Enough blocks that each round (nb/2 disjoint tiles) keeps every thread busy, as long as
    // blocks keep at least 256 rows; results do not depend on the blocking.
    let nb = n
        .div_ceil(cfg.block_rows.min(LOO_BLOCK))
        .max((4 * threads).min(n / 256))
        .max(1);
    let blocks = block_bounds(n, nb);
    let delta = deltas(s, s.max_norm, sim);
    let states: Vec<Mutex<BlockState>> = blocks
        .iter()
        .map(|r| Mutex::new(BlockState::new(r.clone(), k, &delta)))
        .collect();
    let schedule = rounds(blocks.len());
    let total = schedule
        .iter()
        .flatten()
        .map(|&(i, j)| tile_work(blocks[i].len(), blocks[j].len(), i == j))
        .sum();
    let tracker = Tracker {
        progress,
        n_queries: n,
        total,
        done: AtomicU64::new(0),
        last: Mutex::new(0),
    };
    let packed = match engine {
        Engine::Fused => pack_all(s, sim),
        Engine::Portable => Vec::new(),
    };
    let d = s.m.cols();
    let pool: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());
    for round in &schedule {
        round.par_iter().for_each(|&(bi, bj)| {
            let mut scratch = pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            let (rows, cols) = (blocks[bi].clone(), blocks[bj].clone());
            let work = tile_work(rows.len(), cols.len(), bi == bj);
            let mut si = states[bi].lock().unwrap_or_else(|e| e.into_inner());
            let mut sj_guard =
                (bi != bj).then(|| states[bj].lock().unwrap_or_else(|e| e.into_inner()));
            let col_state = match sj_guard.as_deref_mut() {
                Some(sj) => Cols::Other(sj),
                None => Cols::Same,
            };
            match engine {
                Engine::Fused => fused_tile(
                    s,
                    s,
                    sim,
                    rows.clone(),
                    cols.clone(),
                    &packed[rows.start * d..],
                    &packed[cols.start * d..],
                    &mut si,
                    col_state,
                    &mut scratch.micro,
                ),
                Engine::Portable => {
                    portable_tile(s, s, sim, rows, cols, &mut scratch.bufs, &mut si, col_state)
                }
            }
            drop(sj_guard);
            drop(si);
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
            tracker.add(work);
        });
    }
    let states = states
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    finish_all(states, s, s, sim, k, n)
}

fn run_separate(
    q: &Side<'_>,
    g: &Side<'_>,
    cfg: &KnnConfig,
    progress: Progress<'_>,
    engine: Engine,
) -> Result<Neighbours, EvalError> {
    let (nq, ng) = (q.m.rows(), g.m.rows());
    let (k, sim) = (cfg.k, cfg.similarity);
    let threads = rayon::current_num_threads();
    let want = 4 * threads;
    // Query blocks of at most block_rows rows, but at least `want` of them while blocks keep
    // 256 rows; if that is still too few work items, the gallery is split into parts whose
    // candidate lists are merged at the end.
    let nqb = nq.div_ceil(cfg.block_rows).max(want.min(nq / 256)).max(1);
    let qblocks = block_bounds(nq, nqb);
    let n_parts = if qblocks.len() < want {
        want.div_ceil(qblocks.len()).min(ng.div_ceil(4096)).max(1)
    } else {
        1
    };
    let parts: Vec<std::ops::Range<usize>> = (0..n_parts)
        .map(|p| p * ng / n_parts..(p + 1) * ng / n_parts)
        .collect();
    let bmax = qblocks.iter().map(|r| r.len()).max().unwrap_or(1);
    // Gallery rows per tile: about TILE_ELEMS scores, at least 256 rows.
    let chunk = (TILE_ELEMS / bmax).max(256);
    let delta = deltas(q, g.max_norm, sim);
    let tracker = Tracker {
        progress,
        n_queries: nq,
        total: (nq * ng) as u64,
        done: AtomicU64::new(0),
        last: Mutex::new(0),
    };
    let packed_q = match engine {
        Engine::Fused => pack_all(q, sim),
        Engine::Portable => Vec::new(),
    };
    let d = q.m.cols();
    let items: Vec<(usize, usize)> = (0..qblocks.len())
        .flat_map(|b| (0..n_parts).map(move |p| (b, p)))
        .collect();
    let mut results: Vec<(usize, BlockState)> = items
        .par_iter()
        .map(|&(bi, p)| {
            let rows = qblocks[bi].clone();
            let mut st = BlockState::new(rows.clone(), k, &delta);
            let mut scratch = Scratch::default();
            let part = parts[p].clone();
            for c0 in part.clone().step_by(chunk) {
                let cols = c0..(c0 + chunk).min(part.end);
                let work = (rows.len() * cols.len()) as u64;
                match engine {
                    Engine::Fused => {
                        pack(g, cols.clone(), sim, &mut scratch.pb);
                        fused_tile(
                            q,
                            g,
                            sim,
                            rows.clone(),
                            cols,
                            &packed_q[rows.start * d..],
                            &scratch.pb,
                            &mut st,
                            Cols::None,
                            &mut scratch.micro,
                        );
                    }
                    Engine::Portable => portable_tile(
                        q,
                        g,
                        sim,
                        rows.clone(),
                        cols,
                        &mut scratch.bufs,
                        &mut st,
                        Cols::None,
                    ),
                }
                tracker.add(work);
            }
            (bi, st)
        })
        .collect();
    // Items are ordered by (block, part): fold every part into the block's first.
    let mut states: Vec<BlockState> = Vec::with_capacity(qblocks.len());
    for (bi, st) in results.drain(..) {
        if bi < states.len() {
            states[bi].merge(st);
        } else {
            states.push(st);
        }
    }
    finish_all(states, q, g, sim, k, nq)
}

fn finish_all(
    states: Vec<BlockState>,
    q: &Side<'_>,
    g: &Side<'_>,
    sim: Similarity,
    k: usize,
    n_queries: usize,
) -> Result<Neighbours, EvalError> {
    let mut indices = vec![0u32; n_queries * k];
    let mut scores = vec![0f32; n_queries * k];
    let mut outs = Vec::with_capacity(states.len());
    let (mut ri, mut rs) = (&mut indices[..], &mut scores[..]);
    for st in &states {
        let len = st.rows.len() * k;
        let (a, rest_i) = ri.split_at_mut(len);
        let (b, rest_s) = rs.split_at_mut(len);
        outs.push((a, b));
        ri = rest_i;
        rs = rest_s;
    }
    let ok = states
        .into_par_iter()
        .zip(outs)
        .map(|(st, (a, b))| st.finish(q, g, sim, a, b))
        .reduce(|| true, |x, y| x && y);
    if !ok {
        return Err(EvalError::Invalid(format!(
            "internal error: fewer than k = {k} neighbours collected for a query"
        )));
    }
    Ok(Neighbours { k, indices, scores })
}

/// Rows `r` of `side` as a GEMM operand in panel layout (see `knn_kernel.rs`), written into a
/// zeroed `dst` of at least `⌈|r| / 16⌉ · 16 · d` values; normalised as in [`TileBufs::operand`].
fn pack_into(side: &Side<'_>, r: std::ops::Range<usize>, sim: Similarity, dst: &mut [f32]) {
    let d = side.m.cols();
    for (li, i) in r.enumerate() {
        let base = (li / PANEL) * PANEL * d + li % PANEL;
        let src = side.m.row(i);
        let n = side.norms[i];
        let lane = dst[base..].iter_mut().step_by(PANEL);
        if sim == Similarity::Cosine && n > 0.0 {
            for (o, &x) in lane.zip(src) {
                *o = (x as f64 / n) as f32;
            }
        } else {
            for (o, &x) in lane.zip(src) {
                *o = x;
            }
        }
    }
}

/// Packs rows `r` into `buf`, zero-padded to whole panels.
fn pack(side: &Side<'_>, r: std::ops::Range<usize>, sim: Similarity, buf: &mut Vec<f32>) {
    let len = r.len().div_ceil(PANEL) * PANEL * side.m.cols();
    buf.clear();
    buf.resize(len, 0.0);
    pack_into(side, r, sim, buf);
}

/// The whole set packed once, zero-padded to whole micro-panels (what leave-one-out tiles and
/// query blocks slice from).
fn pack_all(side: &Side<'_>, sim: Similarity) -> Vec<f32> {
    let (n, d) = (side.m.rows(), side.m.cols());
    let mut buf = vec![0f32; n.div_ceil(MR) * MR * d];
    buf.par_chunks_mut(MR * d)
        .enumerate()
        .for_each(|(u, chunk)| {
            pack_into(side, u * MR..((u + 1) * MR).min(n), sim, chunk);
        });
    buf
}

/// Bytes of the row operand kept hot in L2 while the column panels stream past.
const MC_BYTES: usize = 512 << 10;

/// One tile on the fused engine: `pa` holds the rows' panels (from `rows.start`), `pb` the
/// columns' (from `cols.start`).
#[allow(clippy::too_many_arguments)]
fn fused_tile(
    q: &Side<'_>,
    g: &Side<'_>,
    sim: Similarity,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    pa: &[f32],
    pb: &[f32],
    si: &mut BlockState,
    mut col_state: Cols<'_>,
    out: &mut kernel::MicroOut,
) {
    let d = q.m.cols();
    let (m, n) = (rows.len(), cols.len());
    let diag = matches!(col_state, Cols::Same);
    let mc = (MC_BYTES / (4 * d * MR)).max(1) * MR;
    let (mut row_thr, mut col_thr) = ([0f32; MR], [0f32; NR]);
    let (mut qn, mut gn) = ([0f32; MR], [0f32; NR]);
    assert!(pa.len() >= m.div_ceil(MR) * MR * d && pb.len() >= n.div_ceil(PANEL) * PANEL * d);
    for ic in (0..m).step_by(mc) {
        let ie = (ic + mc).min(m);
        for j0 in (0..n).step_by(NR) {
            let ncols = NR.min(n - j0);
            let b_off = (j0 / PANEL) * PANEL * d + j0 % PANEL;
            if sim == Similarity::SqEuclidean {
                gn = [0.0; NR];
                gn[..ncols].copy_from_slice(&g.sq32[cols.start + j0..cols.start + j0 + ncols]);
            }
            for ir in (ic..ie).step_by(MR) {
                // Diagonal tiles: only pairs with column > row.
                if diag && j0 + ncols <= ir + 1 {
                    continue;
                }
                row_thr.copy_from_slice(&si.thr[ir..ir + MR]);
                let ct = match &col_state {
                    Cols::None => None,
                    Cols::Same => {
                        col_thr.copy_from_slice(&si.thr[j0..j0 + NR]);
                        Some(&col_thr)
                    }
                    Cols::Other(sj) => {
                        col_thr.copy_from_slice(&sj.thr[j0..j0 + NR]);
                        Some(&col_thr)
                    }
                };
                let nrows = (m - ir).min(MR);
                if sim == Similarity::SqEuclidean {
                    qn = [0.0; MR];
                    let r0 = rows.start + ir;
                    qn[..nrows].copy_from_slice(&q.sq32[r0..r0 + nrows]);
                }
                let chk = kernel::MicroCheck {
                    row_thr: &row_thr,
                    col_thr: ct,
                    sq: (sim == Similarity::SqEuclidean).then_some((&qn, &gn)),
                    lanes: kernel::row_lanes(nrows),
                    ncols,
                    diag: diag.then_some(j0 as isize - ir as isize),
                };
                // SAFETY: `Engine::Fused` is only chosen when `kernel::available()`; `pa` holds
                // whole micro-panels for every row of the tile and `pb` whole panels for every
                // column (asserted above), so the three panels at row `ir` and the 8 lanes at
                // column `j0` are in bounds for all `d` dimensions.
                #[cfg(target_arch = "x86_64")]
                let hit = unsafe {
                    kernel::micro(
                        pa.as_ptr().add(ir * d),
                        pb.as_ptr().add(b_off),
                        d,
                        &chk,
                        out,
                    )
                };
                #[cfg(not(target_arch = "x86_64"))]
                let hit = {
                    let _ = (chk, b_off);
                    unreachable!("the fused engine exists only on x86_64")
                };
                if hit {
                    deliver(
                        out,
                        ir,
                        j0,
                        ncols,
                        rows.start,
                        cols.start,
                        si,
                        &mut col_state,
                    );
                }
            }
        }
    }
}

/// Offers a micro-tile's flagged pairs to the rows' and (symmetric tiles) the columns' lists;
/// `push` re-checks each against the live thresholds.
#[allow(clippy::too_many_arguments)]
fn deliver(
    out: &kernel::MicroOut,
    ir: usize,
    j0: usize,
    ncols: usize,
    row_base: usize,
    col_base: usize,
    si: &mut BlockState,
    col_state: &mut Cols<'_>,
) {
    for c in 0..ncols {
        let j = j0 + c;
        for v in 0..3 {
            let mut m = out.masks[c * 3 + v];
            while m != 0 {
                let l = m.trailing_zeros() as usize;
                m &= m - 1;
                let r = ir + v * PANEL + l;
                let s = out.scores[c * MR + v * PANEL + l];
                si.push(r, s, (col_base + j) as u32);
                match col_state {
                    Cols::None => {}
                    Cols::Same => si.push(j, s, (row_base + r) as u32),
                    Cols::Other(sj) => sj.push(j, s, (row_base + r) as u32),
                }
            }
        }
    }
}

/// One tile on the portable engine: GEMM into the score tile, then [`scan`].
#[allow(clippy::too_many_arguments)]
fn portable_tile(
    q: &Side<'_>,
    g: &Side<'_>,
    sim: Similarity,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    bufs: &mut TileBufs,
    si: &mut BlockState,
    col_state: Cols<'_>,
) {
    let (m, n, d) = (rows.len(), cols.len(), q.m.cols());
    let lhs = bufs.operand(0, q, rows.clone(), sim);
    let rhs = if matches!(col_state, Cols::Same) {
        lhs
    } else {
        bufs.operand(1, g, cols.clone(), sim)
    };
    // `operand` hands out pointers into `bufs.norm[..]` or the inputs; `scores` is a separate
    // buffer. GEMM overwrites the tile (read_dst = false): grow it, never re-zero it.
    if bufs.scores.len() < m * n {
        bufs.scores.resize(m * n, 0.0);
    }
    gemm_abt(bufs.scores.as_mut_ptr(), m * n, lhs, rhs, m, n, d);
    let out = &bufs.scores[..m * n];
    match sim {
        Similarity::SqEuclidean => {
            let approx = SqScore {
                qn: &q.sq32,
                gn: &g.sq32,
            };
            scan(out, &rows, &cols, si, col_state, approx)
        }
        _ => scan(out, &rows, &cols, si, col_state, RawScore),
    }
}

/// Turns a GEMM dot product into the approximate score of query `i` / gallery item `j`.
trait ApproxScore {
    fn score(&self, dot: f32, i: usize, j: usize) -> f32;
}

/// Cosine (operands already normalised) and Dot: the GEMM value itself.
struct RawScore;
impl ApproxScore for RawScore {
    #[inline(always)]
    fn score(&self, dot: f32, _i: usize, _j: usize) -> f32 {
        dot
    }
}

/// `2q·g − ‖q‖² − ‖g‖²`.
struct SqScore<'a> {
    qn: &'a [f32],
    gn: &'a [f32],
}
impl ApproxScore for SqScore<'_> {
    #[inline(always)]
    fn score(&self, dot: f32, i: usize, j: usize) -> f32 {
        2.0 * dot - self.qn[i] - self.gn[j]
    }
}

/// Feeds one score tile to the candidate lists of its rows and, for leave-one-out tiles, of its
/// columns (diagonal tiles: pairs with column > row only). GEMM scores cannot be NaN: inputs
/// are finite and `check_range` rules out overflow.
fn scan<S: ApproxScore>(
    tile: &[f32],
    rows: &std::ops::Range<usize>,
    cols: &std::ops::Range<usize>,
    si: &mut BlockState,
    mut col_state: Cols<'_>,
    approx: S,
) {
    let n = cols.len();
    let diag = matches!(col_state, Cols::Same);
    for (r, i) in rows.clone().enumerate() {
        let trow = &tile[r * n..(r + 1) * n];
        let begin = if diag { r + 1 } else { 0 };
        // Most scores miss every threshold: flag SCAN_W of them at once with branch-free,
        // vectorisable comparisons, then visit only the flagged ones (`push` re-checks them
        // against the live thresholds).
        for c0 in (begin..n).step_by(SCAN_W) {
            let c1 = (c0 + SCAN_W).min(n);
            let seg = &trow[c0..c1];
            let tr = si.thr[r];
            let col_thr = match &col_state {
                Cols::None => None,
                Cols::Same => Some(&si.thr[c0..c1]),
                Cols::Other(st) => Some(&st.thr[c0..c1]),
            };
            // Bit o set: score c0 + o reaches the row's or its column's threshold.
            let mut hits: u32 = match col_thr {
                Some(tc) => seg
                    .iter()
                    .zip(tc)
                    .enumerate()
                    .fold(0, |a, (o, (&dot, &tc))| {
                        let s = approx.score(dot, i, cols.start + c0 + o);
                        a | ((((s >= tr) | (s >= tc)) as u32) << o)
                    }),
                None => seg.iter().enumerate().fold(0, |a, (o, &dot)| {
                    a | (((approx.score(dot, i, cols.start + c0 + o) >= tr) as u32) << o)
                }),
            };
            while hits != 0 {
                let o = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let c = c0 + o;
                let j = cols.start + c;
                let s = approx.score(seg[o], i, j);
                si.push(r, s, j as u32);
                match &mut col_state {
                    Cols::None => {}
                    Cols::Same => si.push(c, s, i as u32),
                    Cols::Other(st) => st.push(c, s, i as u32),
                }
            }
        }
    }
}

/// Scores flagged together before the scalar path (fits the u32 hit mask).
const SCAN_W: usize = 16;

#[derive(Default)]
struct TileBufs {
    norm: [Vec<f32>; 2],
    scores: Vec<f32>,
}

impl TileBufs {
    /// The rows `r` of `side` as a GEMM operand: a slice of the input, or for Cosine an
    /// L2-normalised copy in scratch slot `slot`.
    fn operand(
        &mut self,
        slot: usize,
        side: &Side<'_>,
        r: std::ops::Range<usize>,
        sim: Similarity,
    ) -> *const f32 {
        let d = side.m.cols();
        let src = &side.m.data()[r.start * d..r.end * d];
        if sim != Similarity::Cosine {
            return src.as_ptr();
        }
        let buf = &mut self.norm[slot];
        buf.clear();
        buf.extend_from_slice(src);
        for (row, &n) in buf.chunks_exact_mut(d).zip(&side.norms[r]) {
            if n > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
            }
        }
        buf.as_ptr()
    }
}

/// `out (m × n, row-major) = A · Bᵀ` with `A` `m × d` and `B` `n × d`, both row-major.
pub(crate) fn gemm_abt(
    out: *mut f32,
    len: usize,
    a: *const f32,
    b: *const f32,
    m: usize,
    n: usize,
    d: usize,
) {
    debug_assert_eq!(len, m * n);
    // SAFETY: `a` points at `m·d` and `b` at `n·d` readable f32s (slices of the inputs or of
    // scratch buffers that are not touched until this call returns); `out` points at `m·n`
    // writable f32s of a buffer nothing else reads or writes during the call. Strides describe
    // row-major A, Bᵀ as the column-major view of row-major B, and row-major output. With
    // `read_dst = false`, dst = 1·A·Bᵀ (alpha is ignored).
    unsafe {
        gemm::gemm(
            m,
            n,
            d,
            out,
            1,
            n as isize,
            false,
            a,
            1,
            d as isize,
            b,
            d as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[inline]
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += *x as f64 * *y as f64;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline]
fn sqdist_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let t = x[l] as f64 - y[l] as f64;
            acc[l] += t * t;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        let t = *x as f64 - *y as f64;
        tail += t * t;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_rows_normalised_in_f32_is_their_exact_dot_product() {
        // Rows normalised in f32 have norms 1 ± ~1e-7; they rank by q·g exactly, as in PML.
        let mut m = Matrix::new(
            3,
            4,
            vec![0.3, 0.1, 0.7, 0.2, 0.5, 0.5, 0.1, 0.9, 0.2, 0.8, 0.3, 0.1],
        )
        .unwrap();
        m.l2_normalize_rows();
        for i in 0..3 {
            for j in 0..3 {
                let (a, b) = (m.row(i), m.row(j));
                assert_eq!(
                    exact_score(Similarity::Cosine, a, b),
                    exact_score(Similarity::Dot, a, b)
                );
            }
        }
        // Rows that are not unit-length are divided by their norms.
        let (a, b) = ([3.0f32, 0.0], [1.0f32, 1.0]);
        let c = exact_score(Similarity::Cosine, &a, &b);
        assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15, "{c}");
    }
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Independent O(n²) reference: plain sequential f64 sums, full sort by (score desc, idx asc).
    fn naive(q: &Matrix, g: &Matrix, k: usize, sim: Similarity, loo: bool) -> Neighbours {
        let score = |a: &[f32], b: &[f32]| -> f64 {
            let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
            match sim {
                Similarity::Dot => dot,
                Similarity::Cosine => {
                    let na = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                    let nb = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                    if na * nb > 0.0 {
                        dot / (na * nb)
                    } else {
                        0.0
                    }
                }
                Similarity::SqEuclidean => -a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                    .sum::<f64>(),
            }
        };
        let mut indices = Vec::new();
        let mut scores = Vec::new();
        for i in 0..q.rows() {
            let mut all: Vec<(f64, u32)> = (0..g.rows())
                .filter(|&j| !(loo && i == j))
                .map(|j| (score(q.row(i), g.row(j)), j as u32))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(s, j) in &all[..k] {
                indices.push(j);
                scores.push(s as f32);
            }
        }
        Neighbours { k, indices, scores }
    }

    /// Small-integer data: every score is exact in f32 and f64, so exact ties abound; a few rows
    /// are duplicated and one is all zeros.
    fn tie_data(n: usize, d: usize, seed: u64) -> Matrix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rows: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..d).map(|_| rng.random_range(-2i32..=2) as f32).collect())
            .collect();
        for i in (3..n).step_by(5) {
            rows[i] = rows[i - 3].clone();
        }
        rows[1] = vec![0.0; d];
        Matrix::from_rows(&rows).unwrap()
    }

    fn gauss_data(n: usize, d: usize, seed: u64) -> Matrix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = (0..n * d)
            .map(|_| {
                // Box–Muller keeps the test free of extra distribution crates.
                let u1: f64 = rng.random_range(1e-12..1.0);
                let u2: f64 = rng.random();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Matrix::new(n, d, data).unwrap()
    }

    const SIMS: [Similarity; 3] = [Similarity::Cosine, Similarity::Dot, Similarity::SqEuclidean];

    #[test]
    fn hand_computed_example() {
        // Gallery on a line; query at 0.9 → nearest 1.0 (d²=0.01), then 0.0 (0.81), then 3.0.
        let g = Matrix::new(3, 1, vec![0.0, 1.0, 3.0]).unwrap();
        let q = Matrix::new(1, 1, vec![0.9]).unwrap();
        let cfg = KnnConfig {
            k: 3,
            similarity: Similarity::SqEuclidean,
            block_rows: 4,
        };
        let nb = knn(&q, &g, &cfg, None).unwrap();
        assert_eq!(nb.row(0).0, &[1, 0, 2]);
        let s = nb.row(0).1;
        assert!((s[0] - -0.01).abs() < 1e-6 && (s[1] - -0.81).abs() < 1e-6);
        assert!((s[2] - -(2.1f32 * 2.1)).abs() < 1e-5);
        // Dot: 0.9·3 > 0.9·1 > 0.9·0.
        let cfg = KnnConfig {
            similarity: Similarity::Dot,
            ..cfg
        };
        assert_eq!(knn(&q, &g, &cfg, None).unwrap().row(0).0, &[2, 1, 0]);
    }

    #[test]
    fn matches_naive_with_exact_ties_all_modes() {
        let items = tie_data(53, 6, 7);
        let queries = tie_data(19, 6, 8);
        for sim in SIMS {
            for k in [1, 5, 52] {
                let cfg = KnnConfig {
                    k,
                    similarity: sim,
                    block_rows: 7,
                };
                let got = knn_leave_one_out(&items, &cfg, None).unwrap();
                assert_eq!(
                    got,
                    naive(&items, &items, k, sim, true),
                    "{sim:?} k={k} loo"
                );
                let got = knn(&queries, &items, &cfg, None).unwrap();
                assert_eq!(got, naive(&queries, &items, k, sim, false), "{sim:?} k={k}");
            }
        }
    }

    #[test]
    fn matches_naive_on_gaussian_data() {
        let items = gauss_data(150, 33, 1);
        let queries = gauss_data(40, 33, 2);
        for sim in SIMS {
            let cfg = KnnConfig {
                k: 9,
                similarity: sim,
                block_rows: 64,
            };
            let got = knn_leave_one_out(&items, &cfg, None).unwrap();
            let want = naive(&items, &items, 9, sim, true);
            assert_eq!(got.indices, want.indices, "{sim:?}");
            for (a, b) in got.scores.iter().zip(&want.scores) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{sim:?}: {a} vs {b}"
                );
            }
            let got = knn(&queries, &items, &cfg, None).unwrap();
            assert_eq!(got.indices, naive(&queries, &items, 9, sim, false).indices);
        }
    }

    #[test]
    fn block_size_and_threads_do_not_change_results() {
        let items = tie_data(70, 5, 3);
        let queries = tie_data(23, 5, 4);
        for sim in SIMS {
            let run = |block_rows: usize| {
                let cfg = KnnConfig {
                    k: 6,
                    similarity: sim,
                    block_rows,
                };
                (
                    knn_leave_one_out(&items, &cfg, None).unwrap(),
                    knn(&queries, &items, &cfg, None).unwrap(),
                )
            };
            let base = run(1);
            assert_eq!(run(7), base);
            assert_eq!(run(64), base);
            assert_eq!(run(1000), base);
            let one_thread = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| run(7));
            assert_eq!(one_thread, base);
            let three = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap()
                .install(|| run(1));
            assert_eq!(three, base);
        }
    }

    /// Gallery rows that differ from one base vector by a few f32 ulps: their GEMM scores tie or
    /// mis-order at f32 rounding level, so only the exact re-scoring can order them. Results
    /// must equal the top-k under `exact_score` for every block size. (A different f64
    /// summation order is no valid reference here: the cosines differ by ~1e-13, the size of f64
    /// rounding in a 64-term sum.)
    #[test]
    fn near_ties_below_f32_resolution_follow_exact_scores() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let d = 64;
        let base: Vec<f32> = (0..d).map(|_| rng.random_range(0.5f32..2.0)).collect();
        let mut rows = Vec::new();
        for _ in 0..120 {
            let r: Vec<f32> = base
                .iter()
                .map(|&x| {
                    let steps = rng.random_range(-3i32..=3);
                    let mut y = x;
                    for _ in 0..steps.abs() {
                        y = if steps > 0 {
                            y.next_up()
                        } else {
                            y.next_down()
                        };
                    }
                    y
                })
                .collect();
            rows.push(r);
        }
        let g = Matrix::from_rows(&rows).unwrap();
        let q = Matrix::from_rows(&[base.clone(), rows[5].clone()]).unwrap();
        let reference = |q: &Matrix, loo: bool, sim: Similarity| -> Vec<u32> {
            let mut out = Vec::new();
            for i in 0..q.rows() {
                let mut all: Vec<(f64, u32)> = (0..g.rows())
                    .filter(|&j| !(loo && i == j))
                    .map(|j| (exact_score(sim, q.row(i), g.row(j)), j as u32))
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                out.extend(all[..40].iter().map(|e| e.1));
            }
            out
        };
        // Premise: ranking by f32 dot products gets this data wrong.
        let mut f32_order: Vec<(f32, u32)> = (0..g.rows())
            .map(|j| {
                let s: f32 = base.iter().zip(g.row(j)).map(|(a, b)| a * b).sum();
                (s, j as u32)
            })
            .collect();
        f32_order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let f32_top: Vec<u32> = f32_order[..40].iter().map(|e| e.1).collect();
        assert_ne!(f32_top, reference(&q, false, Similarity::Dot)[..40]);
        for sim in SIMS {
            let want = reference(&q, false, sim);
            let want_loo = reference(&g, true, sim);
            for block_rows in [1, 7, 64] {
                let cfg = KnnConfig {
                    k: 40,
                    similarity: sim,
                    block_rows,
                };
                assert_eq!(
                    knn(&q, &g, &cfg, None).unwrap().indices,
                    want,
                    "{sim:?} block {block_rows}"
                );
                assert_eq!(
                    knn_leave_one_out(&g, &cfg, None).unwrap().indices,
                    want_loo,
                    "{sim:?} block {block_rows} loo"
                );
            }
        }
    }

    #[test]
    fn leave_one_out_excludes_by_index_not_distance() {
        // Rows 0 and 2 are identical: each must find the other at score 1, never itself.
        let m = Matrix::new(3, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]).unwrap();
        let cfg = KnnConfig {
            k: 2,
            similarity: Similarity::Cosine,
            block_rows: 2,
        };
        let nb = knn_leave_one_out(&m, &cfg, None).unwrap();
        assert_eq!(nb.row(0), (&[2u32, 1][..], &[1.0f32, 0.0][..]));
        assert_eq!(nb.row(1).0, &[0, 2]);
        assert_eq!(nb.row(2).0, &[0, 1]);
        for q in 0..3 {
            assert!(!nb.row(q).0.contains(&(q as u32)));
        }
    }

    #[test]
    fn cosine_ignores_scale_and_zero_rows_score_zero() {
        let g = Matrix::new(3, 2, vec![10.0, 0.0, 0.0, 0.0, 1.0, 1.0]).unwrap();
        let q = Matrix::new(1, 2, vec![0.5, 0.0]).unwrap();
        let cfg = KnnConfig {
            k: 3,
            ..Default::default()
        };
        let nb = knn(&q, &g, &cfg, None).unwrap();
        assert_eq!(nb.row(0).0, &[0, 2, 1]);
        let s = nb.row(0).1;
        assert_eq!(s[0], 1.0);
        assert!((s[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(s[2], 0.0);
    }

    #[test]
    fn progress_is_monotone_and_ends_at_total() {
        let items = gauss_data(40, 4, 5);
        let seen = Mutex::new(Vec::new());
        let cb = |d: usize, t: usize| seen.lock().unwrap().push((d, t));
        let cfg = KnnConfig {
            k: 3,
            similarity: Similarity::Dot,
            block_rows: 8,
        };
        knn_leave_one_out(&items, &cfg, Some(&cb)).unwrap();
        let seen = seen.into_inner().unwrap();
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(*seen.last().unwrap(), (40, 40));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let ok = Matrix::new(3, 2, vec![0.0; 6]).unwrap();
        let cfg = |k| KnnConfig {
            k,
            ..Default::default()
        };
        let msg = |r: Result<Neighbours, EvalError>| r.unwrap_err().to_string();
        let nan = Matrix::new(3, 2, vec![0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0]).unwrap();
        assert_eq!(
            msg(knn(&nan, &ok, &cfg(1), None)),
            "query row 1 contains NaN or Inf"
        );
        let inf = Matrix::new(3, 2, vec![0.0, 0.0, 0.0, 0.0, f32::INFINITY, 0.0]).unwrap();
        assert!(msg(knn_leave_one_out(&inf, &cfg(1), None)).contains("row 2"));
        let other_d = Matrix::new(2, 3, vec![0.0; 6]).unwrap();
        assert!(msg(knn(&other_d, &ok, &cfg(1), None)).contains("dimension 3"));
        assert!(msg(knn(&ok, &ok, &cfg(4), None)).contains("k = 4"));
        assert!(msg(knn_leave_one_out(&ok, &cfg(3), None)).contains("at most k = 2"));
        assert!(msg(knn(&ok, &ok, &cfg(0), None)).contains("at least 1"));
        let empty = Matrix::new(0, 2, vec![]).unwrap();
        assert!(msg(knn(&empty, &ok, &cfg(1), None)).contains("empty"));
        let huge = Matrix::new(2, 1, vec![1e19, 1e19]).unwrap();
        let c = KnnConfig {
            k: 1,
            similarity: Similarity::Dot,
            block_rows: 1,
        };
        assert!(msg(knn_leave_one_out(&huge, &c, None)).contains("overflow"));
        let c = KnnConfig {
            block_rows: 0,
            ..cfg(1)
        };
        assert!(msg(knn(&ok, &ok, &c, None)).contains("block_rows"));
    }

    #[test]
    fn rounds_cover_every_pair_once_with_disjoint_blocks() {
        for nb in 1..=13 {
            let sched = rounds(nb);
            let mut seen = std::collections::HashSet::new();
            for round in &sched {
                let mut used = std::collections::HashSet::new();
                for &(a, b) in round {
                    assert!(a <= b && b < nb);
                    assert!(seen.insert((a, b)), "nb={nb}: pair ({a},{b}) twice");
                    assert!(used.insert(a), "nb={nb}: block {a} twice in a round");
                    if a != b {
                        assert!(used.insert(b), "nb={nb}: block {b} twice in a round");
                    }
                }
            }
            assert_eq!(seen.len(), nb * (nb + 1) / 2, "nb={nb}");
        }
    }

    #[test]
    fn block_bounds_are_aligned_contiguous_and_balanced() {
        for n in [1, 47, 48, 49, 1000, 60_502] {
            for nb in [1, 2, 3, 7, 60, 5000] {
                let b = block_bounds(n, nb);
                assert_eq!(b[0].start, 0);
                assert_eq!(b.last().unwrap().end, n);
                for w in b.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                for r in &b {
                    assert_eq!(r.start % MR, 0);
                    assert!(!r.is_empty());
                }
                let units: Vec<usize> = b.iter().map(|r| r.len().div_ceil(MR)).collect();
                let (lo, hi) = (units.iter().min().unwrap(), units.iter().max().unwrap());
                assert!(hi - lo <= 1, "n={n} nb={nb}: {units:?}");
            }
        }
    }

    /// The fused AVX-512 kernel (where this CPU has it) and the portable GEMM + scan give
    /// identical neighbours and scores, on tied and on continuous data, in both modes.
    #[test]
    fn fused_and_portable_engines_agree() {
        if !kernel::available() {
            eprintln!("no AVX-512F on this CPU: only the portable engine runs");
            return;
        }
        let sets = [
            (tie_data(157, 9, 31), tie_data(41, 9, 32)),
            (gauss_data(301, 70, 33), gauss_data(59, 70, 34)),
            (gauss_data(100, 3, 35), gauss_data(7, 3, 36)),
        ];
        for (items, queries) in &sets {
            for sim in SIMS {
                for (k, block_rows) in [(1, 2048), (7, 50), (40, 1)] {
                    let cfg = KnnConfig {
                        k,
                        similarity: sim,
                        block_rows,
                    };
                    let run = |e| knn_leave_one_out_with(items, &cfg, None, e).unwrap();
                    assert_eq!(
                        run(Engine::Fused),
                        run(Engine::Portable),
                        "{sim:?} loo k={k}"
                    );
                    let run = |e| knn_with(queries, items, &cfg, None, e).unwrap();
                    assert_eq!(run(Engine::Fused), run(Engine::Portable), "{sim:?} k={k}");
                }
            }
        }
    }

    #[test]
    fn exact_score_is_symmetric_and_matches_definitions() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let b = [9.0f32, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(exact_score(Similarity::Dot, &a, &b), 165.0);
        assert_eq!(exact_score(Similarity::SqEuclidean, &a, &b), -240.0);
        let c = exact_score(Similarity::Cosine, &a, &b);
        assert!((c - 165.0 / 285.0).abs() < 1e-15);
        for s in SIMS {
            assert_eq!(exact_score(s, &a, &b), exact_score(s, &b, &a));
        }
    }
}
