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

use crate::{EvalError, Matrix};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
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

/// Gallery rows per tile are chosen so that a tile holds about this many scores (32 MiB of f32).
const TILE_ELEMS: usize = 8 << 20;

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
    let b = cfg.block_rows.min(queries.rows());
    // Gallery rows per tile: about TILE_ELEMS scores per tile, at least 256 rows so that GEMM
    // stays efficient when block_rows is huge.
    let c = (TILE_ELEMS / b).max(256).min(gallery.rows());
    let mut tiles = Vec::new();
    for i in (0..queries.rows()).step_by(b) {
        for j in (0..gallery.rows()).step_by(c) {
            tiles.push(Tile {
                rows: i..(i + b).min(queries.rows()),
                cols: j..(j + c).min(gallery.rows()),
            });
        }
    }
    run(
        &q,
        &g,
        Mode::Separate,
        b,
        &tiles,
        cfg,
        queries.rows(),
        progress,
    )
}

/// Exact kNN with the query set equal to the gallery: item `i` never appears in its own list
/// (excluded by index, never by distance, so exact duplicates of `i` are still found). Requires
/// `1 ≤ k ≤ n − 1`. Only the upper triangle of tiles is computed (see the module docs).
pub fn knn_leave_one_out(
    items: &Matrix,
    cfg: &KnnConfig,
    progress: Progress<'_>,
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
    let n = items.rows();
    // At least ~4 row blocks per thread (but blocks of ≥ 256 rows), so that the upper triangle
    // has enough tiles to keep every thread busy; results do not depend on the block size.
    let per_thread = n.div_ceil(4 * rayon::current_num_threads()).max(256);
    let b = cfg.block_rows.min(per_thread).min(n);
    let mut tiles = Vec::new();
    for i in (0..n).step_by(b) {
        for j in (i..n).step_by(b) {
            tiles.push(Tile {
                rows: i..(i + b).min(n),
                cols: j..(j + b).min(n),
            });
        }
    }
    run(&s, &s, Mode::LeaveOneOut, b, &tiles, cfg, n, progress)
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Separate,
    LeaveOneOut,
}

struct Tile {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
}

/// A heap entry; `Ord` makes the *worse* neighbour the greater one, so the max-heap's top is the
/// current k-th best and the ascending sort is best first.
#[derive(Clone, Copy)]
struct Entry {
    score: f64,
    idx: u32,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score).then(self.idx.cmp(&o.idx))
    }
}

/// Top-k state of one block of queries.
struct BlockState {
    heaps: Vec<BinaryHeap<Entry>>,
    /// Per query: an f32 value such that any GEMM score below it cannot enter the top-k
    /// (`−∞` while the heap is not full).
    thr: Vec<f32>,
    /// Per query: the GEMM error allowance subtracted from the k-th exact score.
    delta: Vec<f64>,
}

impl BlockState {
    fn new(rows: std::ops::Range<usize>, k: usize, delta: &[f64]) -> Self {
        Self {
            heaps: rows
                .clone()
                .map(|_| BinaryHeap::with_capacity(k + 1))
                .collect(),
            thr: vec![f32::NEG_INFINITY; rows.len()],
            delta: delta[rows].to_vec(),
        }
    }

    /// Offers gallery item `idx` with exact score `score` to local query `r`.
    #[inline]
    fn offer(&mut self, r: usize, k: usize, entry: Entry) {
        let heap = &mut self.heaps[r];
        if heap.len() < k {
            heap.push(entry);
        } else {
            let mut top = heap.peek_mut().expect("k ≥ 1");
            if entry < *top {
                *top = entry;
            } else {
                return;
            }
        }
        if heap.len() == k {
            let worst = heap.peek().expect("k ≥ 1").score;
            self.thr[r] = f32_at_most(worst - self.delta[r]);
        }
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

#[allow(clippy::too_many_arguments)]
fn run(
    q: &Side<'_>,
    g: &Side<'_>,
    mode: Mode,
    b: usize,
    tiles: &[Tile],
    cfg: &KnnConfig,
    n_queries: usize,
    progress: Progress<'_>,
) -> Result<Neighbours, EvalError> {
    let k = cfg.k;
    let sim = cfg.similarity;
    let dq = deltas(q, g.max_norm, sim);
    let states: Vec<Mutex<BlockState>> = (0..n_queries)
        .step_by(b)
        .map(|i| Mutex::new(BlockState::new(i..(i + b).min(n_queries), k, &dq)))
        .collect();
    let total_work: u64 = tiles
        .iter()
        .map(|t| (t.rows.len() * t.cols.len()) as u64)
        .sum();
    let done_work = AtomicU64::new(0);
    let report = Mutex::new(0usize);
    let d = q.m.cols();

    // Scratch buffers are recycled through a pool: at most one per concurrently running tile,
    // all freed when the search returns.
    let pool: Mutex<Vec<TileBufs>> = Mutex::new(Vec::new());
    tiles.par_iter().for_each(|t| {
        let mut owned = pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let bufs = &mut owned;
        let (rows, cols) = (t.rows.clone(), t.cols.clone());
        let (m, n) = (rows.len(), cols.len());
        let lhs = bufs.operand(0, q, rows.clone(), sim);
        let rhs = if mode == Mode::LeaveOneOut && rows == cols {
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

        let bi = rows.start / b;
        let bj = cols.start / b;
        let symmetric = mode == Mode::LeaveOneOut && bj != bi;
        let mut si = states[bi].lock().unwrap_or_else(|e| e.into_inner());
        let mut sj_guard = symmetric.then(|| states[bj].lock().unwrap_or_else(|e| e.into_inner()));
        let sj = sj_guard.as_deref_mut();
        match sim {
            Similarity::SqEuclidean => {
                let approx = SqScore {
                    qn: &q.sq32,
                    gn: &g.sq32,
                };
                scan(out, q, g, &rows, &cols, k, sim, mode, &mut si, sj, approx)
            }
            _ => scan(out, q, g, &rows, &cols, k, sim, mode, &mut si, sj, RawScore),
        }
        drop(sj_guard);
        drop(si);
        pool.lock().unwrap_or_else(|e| e.into_inner()).push(owned);

        if let Some(p) = progress {
            let w = done_work.fetch_add((m * n) as u64, AtomicOrdering::Relaxed) + (m * n) as u64;
            let done = ((w as u128 * n_queries as u128) / total_work.max(1) as u128) as usize;
            // Serialised so that the reported count never goes backwards.
            let mut last = report.lock().unwrap_or_else(|e| e.into_inner());
            if done > *last {
                *last = done;
                p(done, n_queries);
            }
        }
    });

    let mut indices = Vec::with_capacity(n_queries * k);
    let mut scores = Vec::with_capacity(n_queries * k);
    for st in states {
        let st = st.into_inner().unwrap_or_else(|e| e.into_inner());
        for heap in st.heaps {
            debug_assert_eq!(heap.len(), k);
            for e in heap.into_sorted_vec() {
                indices.push(e.idx);
                scores.push(e.score as f32);
            }
        }
    }
    if indices.len() != n_queries * k {
        return Err(EvalError::Invalid(format!(
            "internal error: {} neighbours collected for {n_queries} queries × k = {k}",
            indices.len()
        )));
    }
    Ok(Neighbours { k, indices, scores })
}

/// Per-thread scratch: normalised operand copies (Cosine) and the score tile.
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
fn gemm_abt(out: *mut f32, len: usize, a: *const f32, b: *const f32, m: usize, n: usize, d: usize) {
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

/// Turns a GEMM dot product into the approximate score for local row `r` / column `c`.
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

/// Feeds one score tile to the top-k of its rows and, for symmetric leave-one-out tiles, of its
/// columns. A candidate is re-scored exactly only when its GEMM score is not below the query's
/// filter threshold. GEMM scores cannot be NaN: inputs are finite and `check_range` rules out
/// overflow.
#[allow(clippy::too_many_arguments)]
fn scan<S: ApproxScore>(
    tile: &[f32],
    q: &Side<'_>,
    g: &Side<'_>,
    rows: &std::ops::Range<usize>,
    cols: &std::ops::Range<usize>,
    k: usize,
    sim: Similarity,
    mode: Mode,
    si: &mut BlockState,
    mut sj: Option<&mut BlockState>,
    approx: S,
) {
    let n = cols.len();
    let skip_self = mode == Mode::LeaveOneOut;
    for (r, i) in rows.clone().enumerate() {
        let trow = &tile[r * n..(r + 1) * n];
        let qrow = q.m.row(i);
        // Most scores miss every threshold: flag SCAN_W of them at once with branch-free,
        // vectorisable comparisons, then visit only the flagged ones, re-checked against the
        // live thresholds (an insertion earlier in the segment may have raised them).
        for c0 in (0..n).step_by(SCAN_W) {
            let c1 = (c0 + SCAN_W).min(n);
            let seg = &trow[c0..c1];
            let tr = si.thr[r];
            // Bit o set: score c0 + o reaches the row's or its column's threshold.
            let mut hits: u32 =
                match &sj {
                    Some(st) => seg.iter().zip(&st.thr[c0..c1]).enumerate().fold(
                        0,
                        |a, (o, (&dot, &tc))| {
                            let s = approx.score(dot, i, cols.start + c0 + o);
                            a | ((((s >= tr) | (s >= tc)) as u32) << o)
                        },
                    ),
                    None => seg.iter().enumerate().fold(0, |a, (o, &dot)| {
                        a | (((approx.score(dot, i, cols.start + c0 + o) >= tr) as u32) << o)
                    }),
                };
            while hits != 0 {
                let o = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let c = c0 + o;
                let dot = seg[o];
                let j = cols.start + c;
                if skip_self && i == j {
                    continue;
                }
                let s = approx.score(dot, i, j);
                let row_hit = s >= si.thr[r];
                let col_hit = match &sj {
                    Some(st) => s >= st.thr[c],
                    None => false,
                };
                if !(row_hit || col_hit) {
                    continue;
                }
                let grow = g.m.row(j);
                // Same formulas as `exact_score`, with row norms precomputed by the same kernel.
                let e = match sim {
                    Similarity::Dot => dot_f64(qrow, grow),
                    Similarity::Cosine => {
                        let den = q.norms[i] * g.norms[j];
                        if den > 0.0 {
                            dot_f64(qrow, grow) / den
                        } else {
                            0.0
                        }
                    }
                    Similarity::SqEuclidean => -sqdist_f64(qrow, grow),
                };
                if row_hit {
                    si.offer(
                        r,
                        k,
                        Entry {
                            score: e,
                            idx: j as u32,
                        },
                    );
                }
                if col_hit {
                    if let Some(st) = sj.as_deref_mut() {
                        st.offer(
                            c,
                            k,
                            Entry {
                                score: e,
                                idx: i as u32,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// Scores flagged together before the scalar top-k path (fits the u32 hit mask).
const SCAN_W: usize = 16;

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
