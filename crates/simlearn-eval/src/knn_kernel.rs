//! The fused AVX-512 score kernel of [`crate::knn`]: a register-blocked `48 × 8` f32 GEMM
//! micro-kernel whose result never leaves L1, followed at once by the top-k filter (row and
//! column thresholds compared with mask registers). Chosen at run time; the portable path (the
//! `gemm` crate plus a scalar scan) runs everywhere else.
//!
//! Operand layout ("panels"): rows are grouped 16 at a time; a panel stores, for every dimension
//! `t`, the 16 rows' values at `t` contiguously (`panel[t * 16 + lane]`). The micro-kernel reads
//! three consecutive panels as its 48 rows (one zmm each per `t`) and broadcasts 8 lanes of one
//! panel as its 8 columns. Each score is one sequential FMA chain over `t`, so the filter's error
//! bound (any summation order) holds.

/// Rows in a panel (one zmm of f32).
pub(crate) const PANEL: usize = 16;
/// Rows of a micro-tile (three panels); every block of rows starts at a multiple of this.
pub(crate) const MR: usize = 48;
/// Columns of a micro-tile (half a panel).
pub(crate) const NR: usize = 8;

/// Whether this CPU runs the fused kernel (AVX-512F, detected once at run time).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Scores of one micro-tile plus the per-(column, 16-row vector) hit masks.
pub(crate) struct MicroOut {
    /// `scores[c * MR + r]`: approximate score of local row `r`, column `c`.
    pub scores: [f32; MR * NR],
    /// `masks[c * 3 + v]`, bit `l`: row `16·v + l` / column `c` reaches a threshold.
    pub masks: [u16; 3 * NR],
}

impl Default for MicroOut {
    fn default() -> Self {
        Self {
            scores: [0.0; MR * NR],
            masks: [0; 3 * NR],
        }
    }
}

/// What the filter compares a micro-tile against.
pub(crate) struct MicroCheck<'a> {
    /// Thresholds of the 48 rows (`+∞` past the last real row).
    pub row_thr: &'a [f32; MR],
    /// Thresholds of the 8 columns (symmetric tiles), else `None`.
    pub col_thr: Option<&'a [f32; NR]>,
    /// SqEuclidean: `‖q‖²` of the rows and `‖g‖²` of the columns; the score becomes
    /// `2·dot − ‖q‖² − ‖g‖²` (same operation order as the portable scan).
    pub sq: Option<(&'a [f32; MR], &'a [f32; NR])>,
    /// Valid lanes of each of the three row vectors.
    pub lanes: [u16; 3],
    /// Real columns (1..=8).
    pub ncols: usize,
    /// Diagonal tiles: `col0 − row0` in block-local indices; only pairs with column index
    /// greater than row index count.
    pub diag: Option<isize>,
}

/// Computes the micro-tile `rows(pa) · cols(pb)ᵀ` and its hit masks; returns whether any bit is
/// set.
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]). `pa` must point at three consecutive panels
/// (`3 · 16 · d` readable f32) and `pb` at 8 lanes of one panel (`pb + t·16 + c` readable for
/// `t < d`, `c < 8`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn micro(
    pa: *const f32,
    pb: *const f32,
    d: usize,
    chk: &MicroCheck<'_>,
    out: &mut MicroOut,
) -> bool {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 3]; NR];
    let (p0, p1, p2) = (pa, pa.add(PANEL * d), pa.add(2 * PANEL * d));
    for t in 0..d {
        let o = t * PANEL;
        let a0 = _mm512_loadu_ps(p0.add(o));
        let a1 = _mm512_loadu_ps(p1.add(o));
        let a2 = _mm512_loadu_ps(p2.add(o));
        let b = pb.add(o);
        for (c, acc_c) in acc.iter_mut().enumerate() {
            let bc = _mm512_set1_ps(*b.add(c));
            acc_c[0] = _mm512_fmadd_ps(a0, bc, acc_c[0]);
            acc_c[1] = _mm512_fmadd_ps(a1, bc, acc_c[1]);
            acc_c[2] = _mm512_fmadd_ps(a2, bc, acc_c[2]);
        }
    }
    let rt = [
        _mm512_loadu_ps(chk.row_thr.as_ptr()),
        _mm512_loadu_ps(chk.row_thr.as_ptr().add(PANEL)),
        _mm512_loadu_ps(chk.row_thr.as_ptr().add(2 * PANEL)),
    ];
    let sq = chk.sq.map(|(qn, gn)| {
        (
            [
                _mm512_loadu_ps(qn.as_ptr()),
                _mm512_loadu_ps(qn.as_ptr().add(PANEL)),
                _mm512_loadu_ps(qn.as_ptr().add(2 * PANEL)),
            ],
            gn,
        )
    });
    let mut any = 0u16;
    for (c, acc_c) in acc.iter().enumerate().take(chk.ncols) {
        let tc = _mm512_set1_ps(chk.col_thr.map_or(f32::INFINITY, |t| t[c]));
        for v in 0..3 {
            let mut s = acc_c[v];
            if let Some((qv, gn)) = &sq {
                s = _mm512_sub_ps(
                    _mm512_sub_ps(_mm512_add_ps(s, s), qv[v]),
                    _mm512_set1_ps(gn[c]),
                );
            }
            _mm512_storeu_ps(out.scores.as_mut_ptr().add(c * MR + v * PANEL), s);
            let mut m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(s, rt[v])
                | _mm512_cmp_ps_mask::<_CMP_GE_OQ>(s, tc);
            m &= chk.lanes[v];
            if let Some(off) = chk.diag {
                m &= lanes_below(off + c as isize - (v * PANEL) as isize);
            }
            out.masks[c * 3 + v] = m;
            any |= m;
        }
    }
    for m in &mut out.masks[chk.ncols * 3..] {
        *m = 0;
    }
    any != 0
}

/// Lanes `l` with `l < lim` (clamped to 0..=16).
#[inline]
pub(crate) fn lanes_below(lim: isize) -> u16 {
    if lim <= 0 {
        0
    } else if lim >= PANEL as isize {
        u16::MAX
    } else {
        (1u16 << lim) - 1
    }
}

/// Valid-lane masks of the three row vectors of a micro-tile with `rows` real rows.
#[inline]
pub(crate) fn row_lanes(rows: usize) -> [u16; 3] {
    [0, 1, 2].map(|v| lanes_below(rows as isize - (v * PANEL) as isize))
}
