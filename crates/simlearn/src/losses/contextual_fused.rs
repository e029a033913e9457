//! The contextual hybrid loss and its gradient `∂L/∂S` in one host pass over sparse
//! neighbourhoods.
//!
//! The tensor-graph form in [`super::contextual`] spends its time on dense `n × n × n`
//! products of 0/1 matrices (`A Aᵀ`, `R W̃` and their backward). But a row of `A` holds only
//! the `≈ k` points within `ε` of the `k`-th neighbour, `B ⊆ A`, `R = B ⊙ Bᵀ`, and `W̃ = M ⊙ A`
//! is masked by `A`. So `W` is sparse, and so is `∂L/∂W = 2(W − Y)/n²` whenever classes are
//! small (the m-per-class batches the loss is trained with): every quantity of the forward
//! and of the straight-through backward (spec §1.5) lives on a few entries per row, except
//! the rank-one parts of `Q`, which are folded into per-row constants. Two dense passes over
//! `S` remain: one reads it (distances, thresholds, masks, contrastive and regulariser sums),
//! one writes `G = ∂L/∂S`. The caller injects `G` into the autodiff graph as
//! `L = ⟨S, sg(G)⟩ − sg(⟨S, G⟩) + sg(L)` (value exactly `L`, gradient exactly `G`).
//!
//! Same semantics as the graph form, entry by entry: distances, margins and thresholds are
//! evaluated with the rounding of the input's dtype (so the masks are the same bits), `≥`
//! comparisons on row values (ties are in), `|N|`, `|N̄|` and the thresholds detached, `|R|`
//! differentiable, the §9.1 empty-complement guard, and the clamps passing the gradient where
//! their argument is `≥ 0`. Sums run in f64 in a fixed order (deterministic, independent of
//! the thread count). The tests compare both forms on random batches and on the spec's worked
//! example.
//!
//! Large classes make `Y`, hence `∂L/∂W`, dense; the kernel stays correct and becomes
//! `O(n²·k)`. Dense neighbourhoods (more than an eighth of all pairs in a batch of 64 or more,
//! e.g. a collapsed batch) make the sparse products lose to dense GEMMs: [`hybrid`] then
//! returns `None` and the caller runs the graph form.

use rayon::prelude::*;

/// Batches from this size on run the kernel's row loops on the rayon pool; smaller ones run
/// them on the calling thread, where waking the pool costs more than the work.
const PARALLEL_FROM: usize = 192;

/// Rows per parallel task: all of them (no split) below [`PARALLEL_FROM`].
fn min_len(n: usize) -> usize {
    if n < PARALLEL_FROM {
        n.max(1)
    } else {
        1
    }
}

/// Runs `f` on a rayon worker (batches of [`PARALLEL_FROM`] or more). A parallel iterator started from a thread outside the pool
/// hands its work over and sleeps until it is done, paying two cross-thread wake-ups per
/// iterator (about 0.3 ms each on the 2-core VMs measured); from a worker the same iterators
/// split without blocking, so the kernel's dozen parallel stages pay that once.
fn on_pool<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    if n < PARALLEL_FROM || rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// Host element types the kernel reads `S` as and writes `G` in.
pub(crate) trait HostFloat: num_traits::Float + Send + Sync + Default + 'static {
    /// Whether the graph form would round every intermediate to f32.
    const F32_ROUNDING: bool;
    fn as_f64(self) -> f64;
    fn of_f64(v: f64) -> Self;
}

impl HostFloat for f32 {
    const F32_ROUNDING: bool = true;
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn of_f64(v: f64) -> Self {
        v as f32
    }
}

impl HostFloat for f64 {
    const F32_ROUNDING: bool = false;
    fn as_f64(self) -> f64 {
        self
    }
    fn of_f64(v: f64) -> Self {
        v
    }
}

/// Forward values and the gradient of the weighted total with respect to `S` (row-major).
pub(crate) struct Fused<T> {
    pub ctx: f64,
    pub con: f64,
    pub reg: f64,
    pub total: f64,
    pub grad: Vec<T>,
}

/// Parameters of one evaluation (the validated loss config plus the term weights).
#[derive(Clone, Copy)]
pub(crate) struct Params {
    pub k: usize,
    pub eps: f64,
    pub gain: f64,
    pub pos_margin: f64,
    pub neg_margin: f64,
    pub sim_target: f64,
    pub w_ctx: f64,
    pub w_con: f64,
    pub w_reg: f64,
}

/// Batches smaller than this always take the fused path, however dense their neighbourhoods.
const ALWAYS_FUSED_BELOW: usize = 64;

/// Largest `k` for which the row thresholds come from an insertion buffer rather than a
/// selection on a copy of the row.
const INSERTION_K: usize = 32;

/// Rows of a sparse matrix: row `i` is `cols[start[i]..start[i + 1]]` with `vals` alongside
/// (empty for a 0/1 pattern). Columns of a pattern are ascending.
#[derive(Default)]
struct Rows {
    start: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f64>,
}

impl Rows {
    fn pattern(rows: Vec<Vec<u32>>) -> Self {
        let mut out = Self {
            start: Vec::with_capacity(rows.len() + 1),
            cols: Vec::with_capacity(rows.iter().map(Vec::len).sum()),
            vals: Vec::new(),
        };
        out.start.push(0);
        for r in rows {
            out.cols.extend_from_slice(&r);
            out.start.push(out.cols.len());
        }
        out
    }

    fn valued(rows: Vec<Vec<(u32, f64)>>) -> Self {
        let nnz = rows.iter().map(Vec::len).sum();
        let mut out = Self {
            start: Vec::with_capacity(rows.len() + 1),
            cols: Vec::with_capacity(nnz),
            vals: Vec::with_capacity(nnz),
        };
        out.start.push(0);
        for r in rows {
            for (c, v) in r {
                out.cols.push(c);
                out.vals.push(v);
            }
            out.start.push(out.cols.len());
        }
        out
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.start[i]..self.start[i + 1]
    }

    fn row(&self, i: usize) -> &[u32] {
        &self.cols[self.range(i)]
    }

    fn len(&self, i: usize) -> usize {
        self.start[i + 1] - self.start[i]
    }

    fn nnz(&self) -> usize {
        self.cols.len()
    }

    fn contains(&self, i: usize, j: u32) -> bool {
        self.row(i).binary_search(&j).is_ok()
    }

    /// The transpose; entry `t` of the result is entry `index[t]` of `self`. Rows of the
    /// result are ascending because `self` is scanned row by row.
    fn transpose(&self, n: usize) -> (Self, Vec<u32>) {
        let mut start = vec![0usize; n + 1];
        for &c in &self.cols {
            start[c as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut cols = vec![0u32; self.nnz()];
        let mut index = vec![0u32; self.nnz()];
        for i in 0..n {
            for e in self.range(i) {
                let c = self.cols[e] as usize;
                cols[next[c]] = i as u32;
                index[next[c]] = e as u32;
                next[c] += 1;
            }
        }
        let vals = if self.vals.is_empty() {
            Vec::new()
        } else {
            index.iter().map(|&e| self.vals[e as usize]).collect()
        };
        (Self { start, cols, vals }, index)
    }
}

/// One sparse row as `(column, value)` pairs.
type SparseRow = Vec<(u32, f64)>;

/// Sparse accumulator: a dense row of values plus the list of touched columns, reset in
/// `O(touched)`. The list is appended to without a branch (each column enters it at most
/// once, so `n` slots suffice, plus one for the write past the last): whether a column is new is data-dependent and would mispredict.
struct Spa {
    val: Vec<f64>,
    seen: Vec<bool>,
    list: Vec<u32>,
    len: usize,
}

impl Spa {
    fn new(n: usize) -> Self {
        Self {
            val: vec![0.0; n],
            seen: vec![false; n],
            list: vec![0; n + 1],
            len: 0,
        }
    }

    fn add(&mut self, j: u32, v: f64) {
        let ju = j as usize;
        self.list[self.len] = j;
        self.len += usize::from(!self.seen[ju]);
        self.seen[ju] = true;
        self.val[ju] += v;
    }

    fn get(&self, j: u32) -> f64 {
        self.val[j as usize]
    }

    fn touched(&self) -> &[u32] {
        &self.list[..self.len]
    }

    fn clear(&mut self) {
        for &j in &self.list[..self.len] {
            self.val[j as usize] = 0.0;
            self.seen[j as usize] = false;
        }
        self.len = 0;
    }
}

/// Loads row `i` of the overlap counts `O = A Aᵀ` (`O_ij = |N(i) ∩ N(j)|`) into `spa`,
/// scattered through the columns of `A`: `O(Σ_{l ∈ N(i)} |column l|)` instead of one list
/// intersection per entry.
fn load_overlap(spa: &mut Spa, a: &Rows, at: &Rows, i: usize) {
    for &l in a.row(i) {
        for &j in at.row(l as usize) {
            spa.add(j, 1.0);
        }
    }
}

/// The `k`-th and `h`-th smallest of `values` (1-based, `h ≤ k ≤ values.len()`, no NaN).
fn kth_and_hth_smallest<T: HostFloat>(
    values: &[T],
    k: usize,
    h: usize,
    scratch: &mut Vec<T>,
) -> (T, T) {
    scratch.clear();
    if k <= INSERTION_K {
        for &v in values {
            if scratch.len() == k {
                if v >= scratch[k - 1] {
                    continue;
                }
                scratch.pop();
            }
            let at = scratch.partition_point(|&u| u <= v);
            scratch.insert(at, v);
        }
        (scratch[k - 1], scratch[h - 1])
    } else {
        scratch.extend_from_slice(values);
        let cmp = |x: &T, y: &T| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal);
        let (_, d_k, _) = scratch.select_nth_unstable_by(k - 1, cmp);
        let d_k = *d_k;
        let (_, d_h, _) = scratch[..k].select_nth_unstable_by(h - 1, cmp);
        (d_k, *d_h)
    }
}

/// What the dense read pass keeps of one row of `S`.
struct RowPass {
    a: Vec<u32>,
    b: Vec<u32>,
    pos_sum: f64,
    pos_count: usize,
    neg_sum: f64,
    neg_count: usize,
    s_sum: f64,
}

/// The hybrid loss (P256 or P224 weights, given as `w_*`) of the `n × n` cosine matrix `s`
/// (finite, row-major, `2 ≤ k < n`) and its gradient. `None` when the neighbourhoods are too
/// dense for the sparse products to pay (see the module documentation).
pub(crate) fn hybrid<T: HostFloat>(
    s: &[T],
    n: usize,
    labels: &[i64],
    p: Params,
) -> Option<Fused<T>> {
    on_pool(n, || hybrid_on_pool(s, n, labels, p))
}

fn hybrid_on_pool<T: HostFloat>(s: &[T], n: usize, labels: &[i64], p: Params) -> Option<Fused<T>> {
    debug_assert_eq!(s.len(), n * n);
    debug_assert_eq!(labels.len(), n);
    let round = |v: f64| if T::F32_ROUNDING { v as f32 as f64 } else { v };
    let (k, h) = (p.k, p.k / 2);
    let nf = n as f64;
    let nn = nf * nf;
    let same = |i: usize, j: usize| labels[i] == labels[j];

    // Members of each class (`order[class_rows[i]]` is the class of `i`), so that same-class
    // entries are visited without scanning rows.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&i| (labels[i as usize], i));
    let mut class_rows = vec![(0usize, 0usize); n];
    let mut start = 0;
    while start < n {
        let label = labels[order[start] as usize];
        let mut end = start;
        while end < n && labels[order[end] as usize] == label {
            end += 1;
        }
        for &i in &order[start..end] {
            class_rows[i as usize] = (start, end);
        }
        start = end;
    }
    let members = |i: usize| {
        let (lo, hi) = class_rows[i];
        &order[lo..hi]
    };

    // Dense read: D = max(0, 2 − 2S), x = ε − D, thresholds −d⁽ᵏ⁾, −d⁽ʰ⁾, the masks
    // A = 1[x ≥ −d⁽ᵏ⁾], B = 1[x ≥ −d⁽ʰ⁾], and the contrastive / regulariser sums (every entry
    // counted as a negative in branch-free lanes, then the few same-class entries corrected).
    let (two, zero) = (T::of_f64(2.0), T::zero());
    let eps_t = T::of_f64(p.eps);
    let (mp_t, mn_t) = (T::of_f64(p.pos_margin), T::of_f64(p.neg_margin));
    let passes: Vec<RowPass> = (0..n)
        .into_par_iter()
        .with_min_len(min_len(n))
        .map_init(
            || (vec![zero; n], Vec::new()),
            |(d_row, scratch), i| {
                let s_row = &s[i * n..(i + 1) * n];
                // In T's own arithmetic, the operations of the graph form:
                // `(S·(−2) + 2).clamp_min(0)`, `−D + ε`, `S − m⁻`, `−S + m⁺`.
                for (d, &sv) in d_row.iter_mut().zip(s_row) {
                    *d = (two - two * sv).max(zero);
                }
                let mut lanes = [[0.0f64; 4]; 3];
                let mut chunks = s_row.chunks_exact(4);
                for chunk in &mut chunks {
                    for (l, &sv) in chunk.iter().enumerate() {
                        let t = (sv - mn_t).max(zero).as_f64();
                        lanes[0][l] += sv.as_f64();
                        lanes[1][l] += t;
                        lanes[2][l] += if t > 0.0 { 1.0 } else { 0.0 };
                    }
                }
                for &sv in chunks.remainder() {
                    let t = (sv - mn_t).max(zero).as_f64();
                    lanes[0][0] += sv.as_f64();
                    lanes[1][0] += t;
                    lanes[2][0] += if t > 0.0 { 1.0 } else { 0.0 };
                }
                let lane_sum = |l: [f64; 4]| (l[0] + l[1]) + (l[2] + l[3]);
                let mut out = RowPass {
                    a: Vec::new(),
                    b: Vec::new(),
                    pos_sum: 0.0,
                    pos_count: 0,
                    neg_sum: lane_sum(lanes[1]),
                    neg_count: lane_sum(lanes[2]) as usize,
                    s_sum: lane_sum(lanes[0]),
                };
                for &j in members(i) {
                    let sv = s_row[j as usize];
                    let t = (sv - mn_t).max(zero).as_f64();
                    out.neg_sum -= t;
                    out.neg_count -= usize::from(t > 0.0);
                    let t = (mp_t - sv).max(zero).as_f64();
                    out.pos_sum += t;
                    out.pos_count += usize::from(t > 0.0);
                }
                let (d_k, d_h) = kth_and_hth_smallest(d_row, k, h, scratch);
                let (t_a, t_b) = (-d_k, -d_h);
                for (j, &d) in d_row.iter().enumerate() {
                    let x = eps_t - d;
                    if x >= t_a {
                        out.a.push(j as u32);
                        if x >= t_b {
                            out.b.push(j as u32);
                        }
                    }
                }
                out
            },
        )
        .collect();

    let mut a_rows = Vec::with_capacity(n);
    let mut b_rows = Vec::with_capacity(n);
    let (mut pos_sum, mut pos_count, mut neg_sum, mut neg_count, mut s_sum) =
        (0.0f64, 0usize, 0.0f64, 0usize, 0.0f64);
    for r in passes {
        a_rows.push(r.a);
        b_rows.push(r.b);
        pos_sum += r.pos_sum;
        pos_count += r.pos_count;
        neg_sum += r.neg_sum;
        neg_count += r.neg_count;
        s_sum += r.s_sum;
    }
    let a = Rows::pattern(a_rows);
    let b = Rows::pattern(b_rows);
    if n >= ALWAYS_FUSED_BELOW && a.nnz() * 8 > n * n {
        return None;
    }
    let (at, at_index) = a.transpose(n);
    let (bt, _) = b.transpose(n);
    let a_count: Vec<f64> = (0..n).map(|i| a.len(i) as f64).collect();
    let abar: Vec<f64> = a_count.iter().map(|c| nf - c).collect();

    // M = ½(P + Q): P_ij = O_ij / |N(i)|, Q_ij = (n − |N(i)| − |N(j)| + O_ij) / |N̄(i)|, 0
    // when |N̄(i)| = 0 (§9.1), with O_ij = |N(i) ∩ N(j)| (row i of O loaded in `overlap`).
    // Reciprocals, as multiplications are several times cheaper than divisions.
    let inv_a: Vec<f64> = a_count.iter().map(|c| 1.0 / c).collect();
    let inv_abar: Vec<f64> = abar
        .iter()
        .map(|&c| if c > 0.5 { 1.0 / c.max(1.0) } else { 0.0 })
        .collect();
    let m_at = |i: usize, j: usize, overlap: &Spa| -> f64 {
        let o = overlap.get(j as u32);
        let pv = round(o * inv_a[i]);
        let qv = round((nf - a_count[i] - a_count[j] + o) * inv_abar[i]);
        round(0.5 * round(pv + qv))
    };
    // W̃ = M ⊙ A, stored along A's entries.
    let wt: Vec<f64> = (0..n)
        .into_par_iter()
        .with_min_len(min_len(n))
        .map_init(
            || Spa::new(n),
            |overlap, i| {
                load_overlap(overlap, &a, &at, i);
                let row: Vec<f64> = a
                    .row(i)
                    .iter()
                    .map(|&j| m_at(i, j as usize, overlap))
                    .collect();
                overlap.clear();
                row
            },
        )
        .flatten_iter()
        .collect();

    // R = B ⊙ Bᵀ (symmetric) and its row sums r.
    let r = Rows::pattern(
        (0..n)
            .map(|i| {
                b.row(i)
                    .iter()
                    .copied()
                    .filter(|&j| b.contains(j as usize, i as u32))
                    .collect()
            })
            .collect(),
    );
    let r_count: Vec<f64> = (0..n).map(|i| r.len(i) as f64).collect();

    // Ŵ = (R W̃) ⊘row r.
    let w_hat = Rows::valued(
        (0..n)
            .into_par_iter()
            .with_min_len(min_len(n))
            .with_min_len(min_len(n))
            .map_init(
                || Spa::new(n),
                |spa, i| {
                    for &j in r.row(i) {
                        let j = j as usize;
                        for e in a.range(j) {
                            spa.add(a.cols[e], wt[e]);
                        }
                    }
                    let row = spa
                        .touched()
                        .iter()
                        .map(|&l| (l, round(spa.get(l) / r_count[i])))
                        .collect();
                    spa.clear();
                    row
                },
            )
            .collect(),
    );
    let (w_hat_t, _) = w_hat.transpose(n);

    // W = ½(Ŵ + Ŵᵀ); L_ctx = Σ_{i≠j} (W_ij − Y_ij)² / n²; G_W = w_ctx·2(W − Y)/n² off the
    // diagonal (symmetric, so G_Ŵ = ½(G_W + G_Wᵀ) = G_W); G_V = G_W ⊘row r;
    // g_r_i = −Σ_l G_W_il Ŵ_il / r_i.
    let per_row: Vec<(SparseRow, f64, f64)> = (0..n)
        .into_par_iter()
        .with_min_len(min_len(n))
        .map_init(
            || Spa::new(n),
            |spa, i| {
                for e in w_hat.range(i) {
                    spa.add(w_hat.cols[e], w_hat.vals[e]);
                }
                for e in w_hat_t.range(i) {
                    spa.add(w_hat_t.cols[e], w_hat_t.vals[e]);
                }
                for &j in members(i) {
                    spa.add(j, 0.0);
                }
                let mut l_row = 0.0;
                let mut gv = Vec::with_capacity(spa.len);
                for t in 0..spa.len {
                    let j = spa.list[t];
                    let ju = j as usize;
                    if ju == i {
                        spa.val[ju] = 0.0;
                        continue;
                    }
                    let w = round(0.5 * round(spa.val[ju]));
                    let diff = w - if same(i, ju) { 1.0 } else { 0.0 };
                    l_row += diff * diff;
                    let g = p.w_ctx * 2.0 * diff / nn;
                    spa.val[ju] = g;
                    gv.push((j, g / r_count[i]));
                }
                let mut g_r = 0.0;
                for e in w_hat.range(i) {
                    g_r -= spa.get(w_hat.cols[e]) * w_hat.vals[e];
                }
                spa.clear();
                (gv, l_row, g_r / r_count[i])
            },
        )
        .collect();
    let ctx = per_row.iter().map(|(_, l, _)| l).sum::<f64>() / nn;
    let g_r: Vec<f64> = per_row.iter().map(|(_, _, g)| *g).collect();
    let g_v = Rows::valued(per_row.into_iter().map(|(gv, _, _)| gv).collect());

    // G_R_ij = Σ_l G_V_il W̃_jl + g_r_i, needed where B_ij = 1 or B_ji = 1 (rows sorted by j).
    let g_r_rows: Vec<Vec<(u32, f64)>> = (0..n)
        .into_par_iter()
        .with_min_len(min_len(n))
        .map_init(
            || Spa::new(n),
            |spa, i| {
                for e in g_v.range(i) {
                    spa.add(g_v.cols[e], g_v.vals[e]);
                }
                let mut need: Vec<u32> = b.row(i).iter().chain(bt.row(i)).copied().collect();
                need.sort_unstable();
                need.dedup();
                let row = need
                    .into_iter()
                    .map(|j| {
                        let mut acc = g_r[i];
                        for e in a.range(j as usize) {
                            acc += spa.get(a.cols[e]) * wt[e];
                        }
                        (j, acc)
                    })
                    .collect();
                spa.clear();
                row
            },
        )
        .collect();
    let g_r_at = |i: usize, j: u32| -> f64 {
        let row = &g_r_rows[i];
        row[row.partition_point(|&(c, _)| c < j)].1
    };

    // G_W̃ = Rᵀ G_V (R symmetric): the direct mask term G_A ⊇ G_W̃ ⊙ M on G_W̃'s support, and
    // G_W̃ on A's support for the products below.
    let gwt_rows: Vec<(SparseRow, Vec<f64>)> = (0..n)
        .into_par_iter()
        .with_min_len(min_len(n))
        .map_init(
            || (Spa::new(n), Spa::new(n)),
            |(spa, overlap), j| {
                load_overlap(overlap, &a, &at, j);
                for &i in r.row(j) {
                    let i = i as usize;
                    for e in g_v.range(i) {
                        spa.add(g_v.cols[e], g_v.vals[e]);
                    }
                }
                let direct = spa
                    .touched()
                    .iter()
                    .map(|&l| (l, spa.get(l) * m_at(j, l as usize, overlap)))
                    .collect();
                let on_a = a.row(j).iter().map(|&l| spa.get(l)).collect();
                spa.clear();
                overlap.clear();
                (direct, on_a)
            },
        )
        .collect();
    let mut g_wt_on_a = Vec::with_capacity(a.nnz());
    let mut direct_rows = Vec::with_capacity(n);
    for (direct, on_a) in gwt_rows {
        direct_rows.push(direct);
        g_wt_on_a.extend(on_a);
    }

    // Through M = ½(P + Q) on A's support: G_O = ½ G_W̃ ⊘row |N| + K with
    // K = ½ G_W̃ ⊘row |N̄| (0 without complement); Q's differentiable row sums get
    // g_a_i = −Σ_j K_ij − Σ_j K_ji, a constant along row i of G_A.
    let mut g_o = vec![0.0f64; a.nnz()];
    let mut g_a_row = vec![0.0f64; n];
    for i in 0..n {
        let has_complement = abar[i] > 0.5;
        for e in a.range(i) {
            let j = a.cols[e] as usize;
            let gm = g_wt_on_a[e];
            let kv = if has_complement {
                0.5 * gm / abar[i].max(1.0)
            } else {
                0.0
            };
            g_a_row[i] -= kv;
            g_a_row[j] -= kv;
            g_o[e] = 0.5 * gm / a_count[i] + kv;
        }
    }

    // Contrastive (§2.2) and regulariser (§2.3).
    let pos_div = (pos_count as f64).max(1.0);
    let neg_div = (neg_count as f64).max(1.0);
    let con = pos_sum / pos_div + neg_sum / neg_div;
    let mean = s_sum / nn;
    let reg = (mean - p.sim_target).powi(2);
    let g_reg = p.w_reg * 2.0 * (mean - p.sim_target) / nn;
    let g_pos = -p.w_con / pos_div;
    let g_neg = p.w_con / neg_div;
    let two_gain = 2.0 * p.gain;

    // Dense write, row by row: G_A + G_B gathered from the direct term, G_B_ij =
    // B_ji (G_R_ij + G_R_ji), the product O = A Aᵀ (G_A += (G_O + G_Oᵀ) A) and g_a; then
    // ∂L/∂S = 2·gain·1[2 − 2S ≥ 0]·(G_A + G_B) + contrastive + regulariser.
    let mut grad = vec![T::default(); n * n];
    grad.par_chunks_mut(n)
        .with_min_len(min_len(n))
        .enumerate()
        .for_each_init(
            || Spa::new(n),
            |spa, (i, out)| {
                for &(l, v) in &direct_rows[i] {
                    spa.add(l, v);
                }
                for &j in bt.row(i) {
                    spa.add(j, g_r_at(i, j) + g_r_at(j as usize, i as u32));
                }
                for e in a.range(i) {
                    let q = a.cols[e] as usize;
                    for &l in a.row(q) {
                        spa.add(l, g_o[e]);
                    }
                }
                for t in at.range(i) {
                    let (p_row, e) = (at.cols[t] as usize, at_index[t] as usize);
                    for &l in a.row(p_row) {
                        spa.add(l, g_o[e]);
                    }
                }
                let base = g_a_row[i];
                let s_row = &s[i * n..(i + 1) * n];
                let one = T::one();
                let ctx_part = |acc: f64, sv: T| {
                    if sv <= one {
                        two_gain * (acc + base)
                    } else {
                        0.0
                    }
                };
                // 2 − 2s ≥ 0 ⇔ s ≤ 1, s − m⁻ ≥ 0 ⇔ s ≥ m⁻, m⁺ − s ≥ 0 ⇔ s ≤ m⁺ (exact in T:
                // a difference of two floats is zero only when they are equal).
                for ((o, &sv), &acc) in out.iter_mut().zip(s_row).zip(&spa.val) {
                    let neg = if sv >= mn_t { g_neg } else { 0.0 };
                    *o = T::of_f64(ctx_part(acc, sv) + neg + g_reg);
                }
                for &j in members(i) {
                    let j = j as usize;
                    let sv = s_row[j];
                    let pos = if sv <= mp_t { g_pos } else { 0.0 };
                    out[j] = T::of_f64(ctx_part(spa.val[j], sv) + pos + g_reg);
                }
                spa.clear();
            },
        );

    let total = p.w_ctx * ctx + p.w_con * con + p.w_reg * reg;
    Some(Fused {
        ctx,
        con,
        reg,
        total,
        grad,
    })
}

/// Row-major `dst (m × n) = lhs · rhs` on the rayon pool, with explicit strides: element
/// `(r, c)` of `lhs` at `r·lhs_rs + c·lhs_cs`, of `rhs` likewise.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: HostFloat>(
    dst: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    assert!(dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts above keep every index the strides describe inside the slices;
    // `dst` is exclusively borrowed; `T` is f32 or f64, which gemm dispatches on. With
    // `read_dst = false`, dst = beta · lhs · rhs and alpha is ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::of_f64(0.0),
            T::of_f64(1.0),
            false,
            false,
            false,
            if m < PARALLEL_FROM {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(0)
            },
        );
    }
}

/// The hybrid loss of raw embeddings `z` (`n × d`, finite, row-major) and its gradient with
/// respect to `z`: `F = z / sqrt(‖z‖² + norm_eps)` row-wise, `S = F Fᵀ` (one GEMM), the sparse
/// kernel [`hybrid`] for `G = ∂L/∂S`, then `∂L/∂F = (G + Gᵀ) F` (one GEMM) and the exact
/// Jacobian of the normalisation, `∂L/∂z = ∂L/∂F / q − z (z · ∂L/∂F) / q³` with
/// `q = sqrt(‖z‖² + norm_eps)`. The returned `grad` is `n × d`. `None` as for [`hybrid`].
pub(crate) fn hybrid_from_embeddings<T: HostFloat>(
    z: &[T],
    n: usize,
    d: usize,
    labels: &[i64],
    norm_eps: f64,
    p: Params,
) -> Option<Fused<T>> {
    on_pool(n, || {
        hybrid_from_embeddings_on_pool(z, n, d, labels, norm_eps, p)
    })
}

fn hybrid_from_embeddings_on_pool<T: HostFloat>(
    z: &[T],
    n: usize,
    d: usize,
    labels: &[i64],
    norm_eps: f64,
    p: Params,
) -> Option<Fused<T>> {
    debug_assert_eq!(z.len(), n * d);
    let q: Vec<f64> = z
        .par_chunks(d)
        .with_min_len(min_len(n))
        .map(|row| {
            let sq: f64 = row.iter().map(|v| v.as_f64() * v.as_f64()).sum();
            (sq + norm_eps).sqrt()
        })
        .collect();
    let mut f = vec![T::default(); n * d];
    f.par_chunks_mut(d)
        .with_min_len(min_len(n))
        .zip(z.par_chunks(d))
        .zip(&q)
        .for_each(|((fr, zr), &qi)| {
            let inv = 1.0 / qi;
            for (o, v) in fr.iter_mut().zip(zr) {
                *o = T::of_f64(v.as_f64() * inv);
            }
        });
    let mut s = vec![T::default(); n * n];
    gemm_into(&mut s, n, n, d, &f, (d, 1), &f, (1, d));
    let mut out = hybrid(&s, n, labels, p)?;

    // G + Gᵀ, in tiles so that both the row and the column reads stay in cache.
    let g = &out.grad;
    const TILE: usize = 32;
    let mut g_sym = vec![T::default(); n * n];
    g_sym
        .par_chunks_mut(TILE * n)
        .with_min_len(min_len(n).div_ceil(TILE))
        .enumerate()
        .for_each(|(bi, block)| {
            let i0 = bi * TILE;
            let rows = block.len() / n;
            for j0 in (0..n).step_by(TILE) {
                let j1 = (j0 + TILE).min(n);
                for di in 0..rows {
                    let i = i0 + di;
                    for j in j0..j1 {
                        block[di * n + j] =
                            T::of_f64(g[i * n + j].as_f64() + g[j * n + i].as_f64());
                    }
                }
            }
        });
    drop(s);
    let mut g_f = vec![T::default(); n * d];
    gemm_into(&mut g_f, n, d, n, &g_sym, (n, 1), &f, (d, 1));
    drop(g_sym);
    g_f.par_chunks_mut(d)
        .with_min_len(min_len(n))
        .zip(z.par_chunks(d))
        .zip(&q)
        .for_each(|((gr, zr), &qi)| {
            let dot: f64 = gr
                .iter()
                .zip(zr)
                .map(|(g, v)| g.as_f64() * v.as_f64())
                .sum();
            let (inv, along) = (1.0 / qi, dot / (qi * qi * qi));
            for (g, v) in gr.iter_mut().zip(zr) {
                *g = T::of_f64(g.as_f64() * inv - v.as_f64() * along);
            }
        });
    out.grad = g_f;
    Some(out)
}
