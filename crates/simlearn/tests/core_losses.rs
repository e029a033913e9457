//! Tests of the core losses: the straight-through step, distances, the contextual hybrid loss,
//! the contrastive loss, the log-ratio loss and the two triplet baselines.
//!
//! Golden values come from the specs' worked examples (`contextual-loss.md` §8,
//! `log-ratio-loss.md` §6). Gradients are checked against central finite differences in f64,
//! and, for the contextual loss (whose step functions have zero derivative), against the spec's
//! explicit backward (§1.5) and its straight-through surrogate (§8), both re-implemented here in
//! plain Rust f64.

use burn::prelude::*;
use burn::tensor::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use simlearn::distances::{
    cosine_similarity_matrix, first_non_finite_row, l2_normalize, same_label_matrix,
    squared_distances_to_row, squared_euclidean_matrix,
};
use simlearn::losses::binary_triplet::BinaryTripletConfig;
use simlearn::losses::contextual::{contextual_similarity, ContextualConfig, Convention, Kernel};
use simlearn::losses::continuous::ContinuousLossConfig;
use simlearn::losses::contrastive::{contrastive_on_similarity, ContrastiveConfig};
use simlearn::losses::dense_triplet::DenseTripletConfig;
use simlearn::losses::log_ratio::{
    AnchorMode, LogRatioConfig, LogRatioDistance, TiePolicy, ZeroLabelPolicy,
};
use simlearn::losses::{ClassLoss, ContinuousLoss, LossOutput};
use simlearn::straight_through::step_st;

// ---------------------------------------------------------------------------------------------
// helpers

fn device() -> Device {
    Device::flex().autodiff()
}

fn tensor(values: &[f64], shape: [usize; 2], dtype: DType) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), (&device(), dtype))
}

fn f64_tensor(values: &[f64], shape: [usize; 2]) -> Tensor<2> {
    tensor(values, shape, DType::F64)
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f64>()
}

fn to_vec(t: Tensor<2>) -> Vec<f64> {
    t.try_into_vec_as::<f64>().expect("readback")
}

fn term(out: &LossOutput, name: &str) -> f64 {
    let (_, t) = out
        .terms
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no term {name}"));
    scalar(t.clone())
}

/// Loss value and autodiff gradient w.r.t. the `n × d` input `x` (f64).
fn value_and_grad(
    f: &dyn Fn(Tensor<2>) -> Tensor<1>,
    x: &[f64],
    shape: [usize; 2],
) -> (f64, Vec<f64>) {
    let leaf = f64_tensor(x, shape).require_grad();
    let loss = f(leaf.clone());
    let grads = loss.backward();
    let g = leaf.grad(&grads).expect("gradient of the input");
    (scalar(loss), to_vec(g))
}

/// Central finite differences of `f` at `x` (f64), step `h`.
fn finite_differences(
    f: &dyn Fn(Tensor<2>) -> Tensor<1>,
    x: &[f64],
    shape: [usize; 2],
    h: f64,
) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let mut plus = x.to_vec();
            plus[i] += h;
            let mut minus = x.to_vec();
            minus[i] -= h;
            let lp = scalar(f(f64_tensor(&plus, shape)));
            let lm = scalar(f(f64_tensor(&minus, shape)));
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol,
            "{what}[{i}]: got {a}, expected {e} (tol {tol})"
        );
    }
}

/// Max |a − e| / (|e| + floor) over entries.
fn max_rel_err(actual: &[f64], expected: &[f64], floor: f64) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs() / (e.abs() + floor))
        .fold(0.0, f64::max)
}

fn gradient_check(f: &dyn Fn(Tensor<2>) -> Tensor<1>, x: &[f64], shape: [usize; 2], what: &str) {
    let (_, g) = value_and_grad(f, x, shape);
    let fd = finite_differences(f, x, shape, 1e-6);
    let err = max_rel_err(&g, &fd, 1e-3);
    assert!(
        err < 1e-5,
        "{what}: autodiff vs finite differences, max rel err {err}\nautodiff {g:?}\nFD {fd:?}"
    );
    assert!(
        g.iter().any(|v| v.abs() > 1e-8),
        "{what}: gradient is identically zero"
    );
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 − u keeps the log argument in (0, 1].
    let u: f64 = rng.random();
    let v: f64 = rng.random();
    (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn gaussian_matrix(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f64> {
    (0..n * d).map(|_| gaussian(rng)).collect()
}

/// Label-distance matrix `|y_i − y_j|` of 1-D labels, as the trait wants it (f32).
fn abs_label_dist(y: &[f64]) -> Vec<f32> {
    let b = y.len();
    let mut out = vec![0f32; b * b];
    for i in 0..b {
        for j in 0..b {
            out[i * b + j] = (y[i] - y[j]).abs() as f32;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// straight-through step

#[test]
fn step_st_forward_is_exact_heaviside_with_ties_giving_one() {
    let x = tensor(&[-1.0, 0.0, 0.5, 0.50001, 2.0, 0.3], [2, 3], DType::F32);
    let t = tensor(&[0.5, 0.3], [2, 1], DType::F32);
    let out = to_vec(step_st(x, t, 10.0));
    // Row 0 threshold 0.5: −1 → 0, 0 → 0, 0.5 (tie) → 1. Row 1 threshold 0.3: all ≥ → 1.
    assert_eq!(out, vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn step_st_backward_is_gain_times_upstream_and_threshold_gets_none() {
    for gain in [10.0, 0.25] {
        let x = f64_tensor(&[-3.0, 0.1, 0.2, 7.0], [1, 4]).require_grad();
        let t = f64_tensor(&[0.15], [1, 1]).require_grad();
        let weights = f64_tensor(&[1.0, 2.0, 3.0, 4.0], [1, 4]);
        let loss = (step_st(x.clone(), t.clone(), gain) * weights).sum();
        // Forward: 0·1 + 0·2 + 1·3 + 1·4.
        let grads = loss.backward();
        let gx = to_vec(x.grad(&grads).unwrap());
        assert_close(
            &gx,
            &[gain, 2.0 * gain, 3.0 * gain, 4.0 * gain],
            1e-12,
            "∂/∂x",
        );
        let gt = t.grad(&grads).map(to_vec);
        assert!(
            gt.as_ref().is_none_or(|g| g.iter().all(|v| *v == 0.0)),
            "threshold received a gradient: {gt:?}"
        );
    }
}

#[test]
fn step_st_forward_value_is_exactly_zero_or_one_at_large_gain() {
    // The textbook x·c + sg(step − x·c) rounds; ours must not.
    let vals: Vec<f64> = (0..64).map(|i| 0.1 * i as f64 - 3.17).collect();
    let x = tensor(&vals, [8, 8], DType::F32);
    let t = tensor(&[0.0; 8], [8, 1], DType::F32);
    let out = to_vec(step_st(x, t, 10.0));
    for (v, o) in vals.iter().zip(&out) {
        assert_eq!(*o, if (*v as f32) >= 0.0 { 1.0 } else { 0.0 });
    }
}

// ---------------------------------------------------------------------------------------------
// distances

#[test]
fn distances_match_hand_computed_values() {
    let a = f64_tensor(&[3.0, 4.0, 0.0, 2.0], [2, 2]);
    let b = f64_tensor(&[1.0, 0.0, 0.0, -1.0, 0.0, 0.0], [3, 2]);
    let n = to_vec(l2_normalize(a.clone(), 0.0));
    assert_close(&n, &[0.6, 0.8, 0.0, 1.0], 1e-12, "l2_normalize");
    // Zero row stays finite (0) thanks to eps inside the sqrt.
    let z = to_vec(l2_normalize(b.clone(), 1e-12));
    assert_close(&z[4..], &[0.0, 0.0], 0.0, "zero row");
    let cos = to_vec(cosine_similarity_matrix(a.clone(), b.clone()));
    assert_close(&cos, &[0.6, -0.8, 0.0, 0.0, -1.0, 0.0], 1e-9, "cosine");
    let sq = to_vec(squared_euclidean_matrix(a.clone(), b));
    // |(3,4)-(1,0)|² = 4+16, |(3,4)-(0,-1)|² = 9+25, |(3,4)|² = 25; (0,2): 1+4, 0+9, 4.
    assert_close(
        &sq,
        &[20.0, 34.0, 25.0, 5.0, 9.0, 4.0],
        1e-9,
        "squared euclidean",
    );
    let to_row = to_vec(squared_distances_to_row(a, 1));
    assert_close(&to_row, &[9.0 + 4.0, 0.0], 1e-12, "to row");
    let y = to_vec(same_label_matrix(&[3, 1, 3], &device(), DType::F64));
    assert_eq!(y, vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn first_non_finite_row_names_the_first_bad_row() {
    let ok = f64_tensor(&[1.0, 2.0, 3.0, 4.0], [2, 2]);
    assert_eq!(first_non_finite_row(&ok), None);
    let bad = f64_tensor(&[1.0, 2.0, 3.0, f64::INFINITY, f64::NAN, 0.0], [3, 2]);
    assert_eq!(first_non_finite_row(&bad), Some(1));
}

#[test]
fn l2_normalize_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = gaussian_matrix(&mut rng, 4, 3);
    let w = gaussian_matrix(&mut rng, 4, 3);
    let f = move |t: Tensor<2>| (l2_normalize(t, 1e-12) * f64_tensor(&w, [4, 3])).sum();
    gradient_check(&f, &x, [4, 3], "l2_normalize");
}

// ---------------------------------------------------------------------------------------------
// contextual loss: plain-Rust f64 reference of spec §1.2 and §1.5

type Mat = Vec<f64>;

fn mm(a: &Mat, b: &Mat, n: usize) -> Mat {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for l in 0..n {
            let ail = a[i * n + l];
            if ail != 0.0 {
                for j in 0..n {
                    c[i * n + j] += ail * b[l * n + j];
                }
            }
        }
    }
    c
}

fn tr(a: &Mat, n: usize) -> Mat {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

/// Contextual-loss parameters of the reference: neighbourhood size, margin, gain.
#[derive(Clone, Copy)]
struct Params {
    k: usize,
    eps: f64,
    g: f64,
}

#[derive(Clone)]
struct Frozen {
    tau_a: Vec<f64>,
    tau_b: Vec<f64>,
    a: Vec<f64>,
    abar: Vec<f64>,
}

struct Cache {
    a_mask: Mat,
    b_mask: Mat,
    x: Mat,
    abar_mat: Mat,
    m: Mat,
    wt: Mat,
    r: Mat,
    rcount: Vec<f64>,
    wh: Mat,
    w: Mat,
    frozen: Frozen,
    lctx: f64,
}

/// E1–E10 in f64. With `surrogate = Some((A0, B0, X0))` the masks are linearised as
/// `A0 + g(X − X0)` (thresholds and counts taken from `frozen`), the smooth surrogate of §8
/// whose exact derivative is the straight-through one.
fn ctx_forward(
    s: &Mat,
    n: usize,
    labels: &[i64],
    params: Params,
    frozen: Option<&Frozen>,
    surrogate: Option<(&Mat, &Mat, &Mat)>,
) -> Cache {
    let Params { k, eps, g } = params;
    let d: Mat = s.iter().map(|v| (2.0 - 2.0 * v).max(0.0)).collect();
    let x: Mat = d.iter().map(|v| -v + eps).collect();
    let frozen = match frozen {
        Some(f) => f.clone(),
        None => {
            let mut tau_a = vec![0.0; n];
            let mut tau_b = vec![0.0; n];
            for i in 0..n {
                let mut row: Vec<f64> = d[i * n..(i + 1) * n].to_vec();
                row.sort_by(|p, q| p.partial_cmp(q).unwrap());
                tau_a[i] = -row[k - 1];
                tau_b[i] = -row[k / 2 - 1];
            }
            Frozen {
                tau_a,
                tau_b,
                a: vec![],
                abar: vec![],
            }
        }
    };
    let (a_mask, b_mask) = match surrogate {
        None => {
            let mut am = vec![0.0; n * n];
            let mut bm = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    am[i * n + j] = if x[i * n + j] >= frozen.tau_a[i] {
                        1.0
                    } else {
                        0.0
                    };
                    bm[i * n + j] = if x[i * n + j] >= frozen.tau_b[i] {
                        1.0
                    } else {
                        0.0
                    };
                }
            }
            (am, bm)
        }
        Some((a0, b0, x0)) => {
            let am = (0..n * n).map(|e| a0[e] + g * (x[e] - x0[e])).collect();
            let bm = (0..n * n).map(|e| b0[e] + g * (x[e] - x0[e])).collect();
            (am, bm)
        }
    };
    let abar_mat: Mat = a_mask.iter().map(|v| 1.0 - v).collect();
    let (acount, abcount) = if frozen.a.is_empty() {
        let a: Vec<f64> = (0..n)
            .map(|i| a_mask[i * n..(i + 1) * n].iter().sum())
            .collect();
        let ab: Vec<f64> = (0..n)
            .map(|i| abar_mat[i * n..(i + 1) * n].iter().sum())
            .collect();
        (a, ab)
    } else {
        (frozen.a.clone(), frozen.abar.clone())
    };
    let aat = mm(&a_mask, &tr(&a_mask, n), n);
    let bbt = mm(&abar_mat, &tr(&abar_mat, n), n);
    let mut m = vec![0.0; n * n];
    let mut wt = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let p = aat[i * n + j] / acount[i];
            let q = if abcount[i] > 0.0 {
                bbt[i * n + j] / abcount[i]
            } else {
                0.0
            };
            m[i * n + j] = 0.5 * (p + q);
            wt[i * n + j] = m[i * n + j] * a_mask[i * n + j];
        }
    }
    let r: Mat = (0..n * n)
        .map(|e| b_mask[e] * b_mask[(e % n) * n + e / n])
        .collect();
    let rcount: Vec<f64> = (0..n).map(|i| r[i * n..(i + 1) * n].iter().sum()).collect();
    let rw = mm(&r, &wt, n);
    let wh: Mat = (0..n * n).map(|e| rw[e] / rcount[e / n]).collect();
    let w: Mat = (0..n * n)
        .map(|e| 0.5 * (wh[e] + wh[(e % n) * n + e / n]))
        .collect();
    let mut lctx = 0.0;
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let y = if labels[i] == labels[j] { 1.0 } else { 0.0 };
                lctx += (w[i * n + j] - y).powi(2);
            }
        }
    }
    lctx /= (n * n) as f64;
    let frozen = Frozen {
        a: acount,
        abar: abcount,
        ..frozen
    };
    Cache {
        a_mask,
        b_mask,
        x,
        abar_mat,
        m,
        wt,
        r,
        rcount,
        wh,
        w,
        frozen,
        lctx,
    }
}

/// The explicit backward of spec §1.5: ∂L_ctx/∂S.
fn ctx_backward(c: &Cache, s: &Mat, n: usize, labels: &[i64], g: f64) -> Mat {
    let nn = (n * n) as f64;
    let mut gw = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let y = if labels[i] == labels[j] { 1.0 } else { 0.0 };
                gw[i * n + j] = 2.0 / nn * (c.w[i * n + j] - y);
            }
        }
    }
    let gwt = tr(&gw, n);
    let gwh: Mat = (0..n * n).map(|e| 0.5 * (gw[e] + gwt[e])).collect();
    let gn: Mat = (0..n * n).map(|e| gwh[e] / c.rcount[e / n]).collect();
    let gr_vec: Vec<f64> = (0..n)
        .map(|i| {
            -(0..n)
                .map(|j| gwh[i * n + j] * c.wh[i * n + j])
                .sum::<f64>()
                / c.rcount[i]
        })
        .collect();
    let gn_wt = mm(&gn, &tr(&c.wt, n), n);
    let g_r: Mat = (0..n * n).map(|e| gn_wt[e] + gr_vec[e / n]).collect();
    let g_wt = mm(&tr(&c.r, n), &gn, n);
    let g_rt = tr(&g_r, n);
    let bt = tr(&c.b_mask, n);
    let g_b: Mat = (0..n * n).map(|e| (g_r[e] + g_rt[e]) * bt[e]).collect();
    let g_m: Mat = (0..n * n).map(|e| g_wt[e] * c.a_mask[e]).collect();
    let mut g_a: Mat = (0..n * n).map(|e| g_wt[e] * c.m[e]).collect();
    let u: Mat = (0..n * n)
        .map(|e| 0.5 * g_m[e] / c.frozen.a[e / n])
        .collect();
    let ua = mm(&u, &c.a_mask, n);
    let uta = mm(&tr(&u, n), &c.a_mask, n);
    let v: Mat = (0..n * n)
        .map(|e| {
            let ab = c.frozen.abar[e / n];
            if ab > 0.0 {
                0.5 * g_m[e] / ab
            } else {
                0.0
            }
        })
        .collect();
    let vab = mm(&v, &c.abar_mat, n);
    let vtab = mm(&tr(&v, n), &c.abar_mat, n);
    for e in 0..n * n {
        g_a[e] += ua[e] + uta[e] - vab[e] - vtab[e];
    }
    (0..n * n)
        .map(|e| {
            let pass = if 2.0 - 2.0 * s[e] >= 0.0 { 1.0 } else { 0.0 };
            2.0 * g * (g_a[e] + g_b[e]) * pass
        })
        .collect()
}

/// ∂L_ctx/∂S by central differences of the straight-through surrogate (spec §8, appendix).
fn ctx_surrogate_fd(s: &Mat, n: usize, labels: &[i64], params: Params) -> Mat {
    let c0 = ctx_forward(s, n, labels, params, None, None);
    let sur = (&c0.a_mask, &c0.b_mask, &c0.x);
    let h = 1e-6;
    let eval = |s2: &Mat| ctx_forward(s2, n, labels, params, Some(&c0.frozen), Some(sur)).lctx;
    let mut out = vec![0.0; n * n];
    for e in 0..n * n {
        let shifted = |delta: f64| {
            let mut s2 = s.clone();
            s2[e] += delta;
            eval(&s2)
        };
        out[e] = if e / n == e % n {
            // One-sided on the diagonal, where the clamp of D has its kink (S_ii = 1).
            (3.0 * shifted(0.0) - 4.0 * shifted(-h) + shifted(-2.0 * h)) / (2.0 * h)
        } else {
            (shifted(h) - shifted(-h)) / (2.0 * h)
        };
    }
    out
}

// ---------------------------------------------------------------------------------------------
// contextual loss: spec §8 worked example

/// The spec's §8 parameters: k 4, ε 0.05, g 10.
const SPEC_PARAMS: Params = Params {
    k: 4,
    eps: 0.05,
    g: 10.0,
};

const ANGLES: [f64; 6] = [0.0, 14.0, 44.0, 60.0, 90.0, 130.0];
const LABELS: [i64; 6] = [0, 0, 0, 1, 1, 1];

fn example_f() -> Vec<f64> {
    ANGLES
        .iter()
        .flat_map(|a| {
            let t = a.to_radians();
            [t.cos(), t.sin()]
        })
        .collect()
}

/// `S = F Fᵀ` of the example with the diagonal set to exactly 1 (the spec's S).
fn example_s() -> Vec<f64> {
    let f = example_f();
    let n = 6;
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = if i == j {
                1.0
            } else {
                f[2 * i] * f[2 * j] + f[2 * i + 1] * f[2 * j + 1]
            };
        }
    }
    s
}

const SPEC_G_CTX: [f64; 36] = [
    -0.20807, 0.04844, -0.21979, 0.47595, 0.04844, -0.11979, //
    -0.25321, 0.09705, -0.17118, 0.52457, 0.09705, -0.2691, //
    -0.42483, 0.22569, 0.3842, 1.17075, 0.30694, -0.87274, //
    0.43351, 0.92222, 1.1355, 0.20469, -1.55373, -1.37326, //
    0.18802, -0.0099, 0.16458, -0.32674, -0.0099, 0.02604, //
    0.21701, -0.06944, 0.00868, -0.54688, -0.06944, 0.13889,
];

const SPEC_G_TOTAL: [f64; 36] = [
    -0.08165, 0.02095, -0.21134, 0.19196, 0.02095, -0.04634, //
    -0.09971, 0.0404, -0.06689, 0.29474, 0.0404, -0.10606, //
    -0.29335, 0.09186, 0.15526, 0.55321, 0.20769, -0.34752, //
    0.17498, 0.4538, 0.53911, 0.08345, -0.61992, -0.67273, //
    0.07679, -0.00238, 0.15074, -0.12912, -0.00238, 0.01199, //
    0.08838, -0.0262, 0.00505, -0.34217, -0.0262, 0.05713,
];

const SPEC_G_CON: [f64; 36] = {
    let q = 1.0 / 6.0;
    [
        0.0, 0.0, -0.25, 0.0, 0.0, 0.0, //
        0.0, 0.0, 0.0, q, 0.0, 0.0, //
        -0.25, 0.0, 0.0, q, q, 0.0, //
        0.0, q, q, 0.0, 0.0, -0.25, //
        0.0, 0.0, q, 0.0, 0.0, 0.0, //
        0.0, 0.0, 0.0, -0.25, 0.0, 0.0,
    ]
};

const SPEC_G_F: [f64; 12] = [
    -0.44632, 0.07808, 0.47688, 0.62183, 0.50919, 1.2638, //
    2.61481, -0.44207, 0.02708, -0.40614, -0.91354, -1.0755,
];

const SPEC_G_Z: [f64; 12] = [
    0.0, 0.07808, -0.11806, 0.4735, -0.38581, 0.39952, //
    2.15253, -1.24276, 0.02708, 0.0, -1.06567, -0.8942,
];

#[test]
fn contextual_worked_example_values_f64() {
    let loss = ContextualConfig::default().init().unwrap();
    let out = loss
        .forward_similarity(f64_tensor(&example_s(), [6, 6]), &LABELS)
        .unwrap();
    let tol = 6e-9; // the spec prints 8 decimals
    assert!((term(&out, "contextual") - 0.15075521).abs() < tol);
    assert!((term(&out, "contrastive") - 0.40284617).abs() < tol);
    assert!((term(&out, "regulariser") - 0.08061968).abs() < tol);
    assert!((scalar(out.total) - 0.26978714).abs() < tol);

    // Same numbers through the embedding path (F already unit-norm).
    let out = loss
        .forward(f64_tensor(&example_f(), [6, 2]), &LABELS)
        .unwrap();
    assert!((term(&out, "contextual") - 0.15075521).abs() < tol);
    assert!((scalar(out.total) - 0.26978714).abs() < 1e-8);
}

#[test]
fn contextual_worked_example_eps_sensitivity_and_p224_total() {
    let cfg = ContextualConfig {
        eps: 0.04,
        ..ContextualConfig::default()
    };
    let out = cfg
        .init()
        .unwrap()
        .forward_similarity(f64_tensor(&example_s(), [6, 6]), &LABELS)
        .unwrap();
    assert!((term(&out, "contextual") - 0.13411458).abs() < 6e-9);

    let p224 = ContextualConfig::p224(0.05, 0.04);
    assert_eq!(p224.convention, Convention::P224);
    assert_eq!(p224.sim_target, 0.3);
    let out = p224
        .init()
        .unwrap()
        .forward_similarity(f64_tensor(&example_s(), [6, 6]), &LABELS)
        .unwrap();
    assert!((scalar(out.total) - 0.15302377).abs() < 6e-9);
}

#[test]
fn contextual_worked_example_values_f32() {
    let loss = ContextualConfig::default().init().unwrap();
    let out = loss
        .forward(tensor(&example_f(), [6, 2], DType::F32), &LABELS)
        .unwrap();
    assert!((term(&out, "contextual") - 0.15075521).abs() < 1e-6);
    assert!((term(&out, "contrastive") - 0.40284617).abs() < 1e-6);
    assert!((term(&out, "regulariser") - 0.08061968).abs() < 1e-6);
    assert!((scalar(out.total) - 0.26978714).abs() < 1e-6);
}

#[test]
fn contextual_worked_example_gradient_wrt_s() {
    for dtype in [DType::F64, DType::F32] {
        let tol = if dtype == DType::F64 { 6e-6 } else { 1e-4 };
        let loss = ContextualConfig::default().init().unwrap();
        let s = tensor(&example_s(), [6, 6], dtype).require_grad();
        let out = loss.forward_similarity(s.clone(), &LABELS).unwrap();
        let g = to_vec(s.grad(&out.total.backward()).unwrap());
        assert_close(&g, &SPEC_G_TOTAL, tol, "∂L_total/∂S");

        // Contextual term alone: λ = 1, γ = 0 leaves w_ctx = 1, w_con = w_reg = 0.
        let ctx_only = ContextualConfig {
            lambda: 1.0,
            gamma: 0.0,
            ..ContextualConfig::default()
        };
        let s = tensor(&example_s(), [6, 6], dtype).require_grad();
        let out = ctx_only
            .init()
            .unwrap()
            .forward_similarity(s.clone(), &LABELS)
            .unwrap();
        let g = to_vec(s.grad(&out.total.backward()).unwrap());
        assert_close(&g, &SPEC_G_CTX, tol, "∂L_ctx/∂S");
    }
}

#[test]
fn contextual_worked_example_gradient_wrt_embeddings() {
    let loss = ContextualConfig::default().init().unwrap();
    // ∂L/∂F through S = F Fᵀ (no normalisation).
    let f = f64_tensor(&example_f(), [6, 2]).require_grad();
    let s = f.clone().matmul(f.clone().transpose());
    let out = loss.forward_similarity(s, &LABELS).unwrap();
    let g = to_vec(f.grad(&out.total.backward()).unwrap());
    assert_close(&g, &SPEC_G_F, 1e-5, "∂L/∂F");

    // ∂L/∂z through the normalisation inside the loss.
    for dtype in [DType::F64, DType::F32] {
        let z = tensor(&example_f(), [6, 2], dtype).require_grad();
        let out = loss.forward(z.clone(), &LABELS).unwrap();
        let g = to_vec(z.grad(&out.total.backward()).unwrap());
        assert_close(&g, &SPEC_G_Z, 1e-4, "∂L/∂z");
    }
}

#[test]
fn contextual_reference_reproduces_spec_and_agrees_with_surrogate_fd() {
    // Guards the plain-Rust reference used by the random-batch test below.
    let s = example_s();
    let c = ctx_forward(&s, 6, &LABELS, SPEC_PARAMS, None, None);
    assert!((c.lctx - 0.15075521).abs() < 6e-9);
    let hand = ctx_backward(&c, &s, 6, &LABELS, 10.0);
    assert_close(&hand, &SPEC_G_CTX, 6e-6, "hand backward");
    let fd = ctx_surrogate_fd(&s, 6, &LABELS, SPEC_PARAMS);
    assert_close(&hand, &fd, 1e-7, "hand vs surrogate FD");
}

/// A random batch with a few tight clusters so that neighbourhoods are non-trivial.
fn clustered_batch(
    rng: &mut ChaCha8Rng,
    classes: usize,
    per_class: usize,
    d: usize,
) -> (Vec<f64>, Vec<i64>) {
    let centres = gaussian_matrix(rng, classes, d);
    let mut z = Vec::new();
    let mut labels = Vec::new();
    for i in 0..classes * per_class {
        // Mix the class: 1 in 4 points borrows another class's centre.
        let c = if rng.random::<f64>() < 0.25 {
            rng.random_range(0..classes)
        } else {
            i / per_class
        };
        for j in 0..d {
            z.push(centres[c * d + j] + 0.6 * gaussian(rng));
        }
        labels.push((i / per_class) as i64);
    }
    (z, labels)
}

fn unit_similarity(z: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut f = z.to_vec();
    for i in 0..n {
        let norm = (0..d).map(|j| f[i * d + j].powi(2)).sum::<f64>().sqrt();
        for j in 0..d {
            f[i * d + j] /= norm;
        }
    }
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = if i == j {
                1.0
            } else {
                (0..d).map(|l| f[i * d + l] * f[j * d + l]).sum()
            };
        }
    }
    s
}

#[test]
fn contextual_autodiff_matches_explicit_backward_and_surrogate_fd_on_random_batches() {
    let mut rng = ChaCha8Rng::seed_from_u64(2023);
    for (trial, (k, eps)) in [(4, 0.05), (4, 0.2), (3, 0.1), (6, 0.05), (5, 0.3)]
        .into_iter()
        .enumerate()
    {
        let (classes, per_class, d) = (3, 4, 3);
        let n = classes * per_class;
        let (z, labels) = clustered_batch(&mut rng, classes, per_class, d);
        let s = unit_similarity(&z, n, d);
        for kernel in [Kernel::Fused, Kernel::Graph] {
            let cfg = ContextualConfig {
                k,
                eps,
                lambda: 1.0,
                gamma: 0.0,
                kernel,
                ..ContextualConfig::default()
            };
            let st = f64_tensor(&s, [n, n]).require_grad();
            let out = cfg
                .init()
                .unwrap()
                .forward_similarity(st.clone(), &labels)
                .unwrap();
            let l_auto = scalar(out.total.clone());
            let g_auto = to_vec(st.grad(&out.total.backward()).unwrap());

            let c = ctx_forward(&s, n, &labels, Params { k, eps, g: 10.0 }, None, None);
            assert!(
                (l_auto - c.lctx).abs() < 1e-12,
                "trial {trial}: L {l_auto} vs {}",
                c.lctx
            );
            let hand = ctx_backward(&c, &s, n, &labels, 10.0);
            let fd = ctx_surrogate_fd(&s, n, &labels, Params { k, eps, g: 10.0 });
            let scale = hand.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 1e-6, "trial {trial}: trivial gradient");
            assert_close(
                &g_auto,
                &hand,
                1e-9 * scale.max(1.0),
                &format!("trial {trial}: autodiff vs §1.5"),
            );
            assert_close(
                &g_auto,
                &fd,
                1e-6 * scale.max(1.0),
                &format!("trial {trial} {kernel:?}: autodiff vs surrogate FD"),
            );
        }
    }
}

/// Runs `cfg` with both kernels on embeddings `z` (`n × d`): total, terms, ∂L/∂z, and on
/// `S = F Fᵀ`: ∂L/∂S. Returns the largest relative difference seen and the fused gradient.
fn fused_vs_graph(
    cfg: &ContextualConfig,
    z: &[f64],
    n: usize,
    d: usize,
    labels: &[i64],
    dtype: DType,
) -> (f64, Vec<f64>) {
    let mut worst = 0.0f64;
    let rel = |a: f64, b: f64, what: &str| {
        assert!(a.is_finite() && b.is_finite(), "{what}: {a} vs {b}");
        (a - b).abs() / b.abs().max(1e-3)
    };
    let run = |kernel: Kernel, on_s: bool| {
        let loss = ContextualConfig {
            kernel,
            ..cfg.clone()
        }
        .init()
        .unwrap();
        let x = tensor(z, [n, d], dtype).require_grad();
        if on_s {
            let f = l2_normalize(x.clone(), 1e-12).detach().require_grad();
            let s = f.clone().matmul(f.transpose()).detach().require_grad();
            let out = loss.forward_similarity(s.clone(), labels).unwrap();
            let terms: Vec<f64> = out.terms.iter().map(|(_, v)| scalar(v.clone())).collect();
            let g = to_vec(s.grad(&out.total.clone().backward()).unwrap());
            (scalar(out.total), terms, g)
        } else {
            let out = loss.forward(x.clone(), labels).unwrap();
            let terms: Vec<f64> = out.terms.iter().map(|(_, v)| scalar(v.clone())).collect();
            let g = to_vec(x.grad(&out.total.clone().backward()).unwrap());
            (scalar(out.total), terms, g)
        }
    };
    let mut fused_grad = Vec::new();
    for on_s in [false, true] {
        let (lf, tf, gf) = run(Kernel::Fused, on_s);
        let (lg, tg, gg) = run(Kernel::Graph, on_s);
        worst = worst.max(rel(lf, lg, "total"));
        for (a, b) in tf.iter().zip(&tg) {
            worst = worst.max(rel(*a, *b, "term"));
        }
        let scale = gg.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        let g_err = gf
            .iter()
            .zip(&gg)
            .map(|(a, b)| {
                assert!(a.is_finite(), "non-finite fused gradient");
                (a - b).abs() / scale
            })
            .fold(0.0, f64::max);
        worst = worst.max(g_err);
        if !on_s {
            fused_grad = gf;
        }
    }
    (worst, fused_grad)
}

#[test]
fn contextual_fused_kernel_matches_the_graph_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // (classes, per class, d, k, eps, convention): small and paper-sized batches, large
    // classes (dense Y), k from 2 to 8, ε = 0 (only exact ties widen a neighbourhood) to 0.3.
    let cases = [
        (3, 4, 3, 4, 0.05, Convention::P256),
        (32, 4, 16, 4, 0.05, Convention::P256),
        (16, 8, 8, 8, 0.05, Convention::P256),
        (24, 4, 32, 2, 0.0, Convention::P256),
        (20, 5, 8, 3, 0.3, Convention::P224),
        (2, 48, 8, 4, 0.05, Convention::P256),
        (5, 20, 4, 6, 0.1, Convention::P224),
    ];
    for (case, &(classes, per_class, d, k, eps, convention)) in cases.iter().enumerate() {
        let n = classes * per_class;
        let (mut z, labels) = clustered_batch(&mut rng, classes, per_class, d);
        // Exact duplicates tie at every threshold they meet.
        let (src, dst) = (1, n - 1);
        for j in 0..d {
            z[dst * d + j] = z[src * d + j];
        }
        let cfg = ContextualConfig {
            k,
            eps,
            convention,
            lambda: if convention == Convention::P224 {
                0.2
            } else {
                0.4
            },
            ..ContextualConfig::default()
        };
        let (err64, grad) = fused_vs_graph(&cfg, &z, n, d, &labels, DType::F64);
        assert!(
            err64 < 1e-10,
            "case {case} (n {n}, k {k}, ε {eps}): f64 difference {err64:e}"
        );
        assert!(
            grad.iter().any(|v| v.abs() > 1e-9),
            "case {case}: trivial gradient"
        );
        let (err32, _) = fused_vs_graph(&cfg, &z, n, d, &labels, DType::F32);
        assert!(
            err32 < 2e-4,
            "case {case} (n {n}, k {k}, ε {eps}): f32 difference {err32:e}"
        );
    }
}

#[test]
fn contextual_fused_kernel_falls_back_on_dense_neighbourhoods() {
    // 80 points within a few degrees: every neighbourhood is the whole batch, so the fused
    // kernel hands over to the graph form (and the §9.1 guard keeps both finite).
    let n = 80;
    let z: Vec<f64> = (0..n)
        .flat_map(|i| {
            let t = (i as f64 * 0.05).to_radians();
            [t.cos(), t.sin(), 0.0]
        })
        .collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| i / 4).collect();
    let (err, grad) = fused_vs_graph(&ContextualConfig::default(), &z, n, 3, &labels, DType::F64);
    assert!(err < 1e-12, "difference {err:e}");
    assert!(grad.iter().all(|v| v.is_finite()));
}

#[test]
fn contextual_collapsed_batch_is_finite() {
    // §8 "degenerate batch": six points within 5°, every |N̄(i)| = 0; the reference gives NaN.
    let z: Vec<f64> = (0..6)
        .flat_map(|i| {
            let t = (i as f64).to_radians();
            [t.cos(), t.sin()]
        })
        .collect();
    let loss = ContextualConfig::default().init().unwrap();
    let zt = f64_tensor(&z, [6, 2]).require_grad();
    let out = loss.forward(zt.clone(), &LABELS).unwrap();
    let total = scalar(out.total.clone());
    let ctx = term(&out, "contextual");
    assert!(
        total.is_finite() && ctx.is_finite(),
        "total {total}, ctx {ctx}"
    );
    // Hand value: A = all ones, Q ≡ 0, so W̃ = ½ everywhere; B has |N_{2+ε}| rows whose
    // averages are all ½, hence W = ½ and L_ctx = Σ_{i≠j} ¼ / 36 = 30/144.
    assert!((ctx - 30.0 / 144.0).abs() < 1e-12, "ctx {ctx}");
    let g = to_vec(zt.grad(&out.total.backward()).unwrap());
    assert!(g.iter().all(|v| v.is_finite()));
}

#[test]
fn contextual_bad_input_errors_name_the_parameter() {
    let z = f64_tensor(&example_f(), [6, 2]);
    let err = |cfg: ContextualConfig, z: Tensor<2>, labels: &[i64]| -> String {
        match cfg.init() {
            Err(e) => e.to_string(),
            Ok(loss) => loss
                .forward(z, labels)
                .expect_err("expected an error")
                .to_string(),
        }
    };
    let e = err(
        ContextualConfig {
            k: 6,
            ..Default::default()
        },
        z.clone(),
        &LABELS,
    );
    assert!(e.contains("k = 6") && e.contains("n = 6"), "{e}");
    let e = err(
        ContextualConfig {
            k: 9,
            ..Default::default()
        },
        z.clone(),
        &LABELS,
    );
    assert!(e.contains("k = 9") && e.contains("n = 6"), "{e}");
    let e = err(
        ContextualConfig {
            k: 1,
            ..Default::default()
        },
        z.clone(),
        &LABELS,
    );
    assert!(e.contains("k = 1"), "{e}");
    let e = err(ContextualConfig::default(), z.clone(), &LABELS[..5]);
    assert!(
        e.contains("labels") && e.contains('5') && e.contains('6'),
        "{e}"
    );
    let e = err(
        ContextualConfig {
            lambda: 0.95,
            ..Default::default()
        },
        z.clone(),
        &LABELS,
    );
    assert!(e.contains("lambda"), "{e}");
    let e = err(
        ContextualConfig {
            eps: f64::NAN,
            ..Default::default()
        },
        z,
        &LABELS,
    );
    assert!(e.contains("eps"), "{e}");
    let mut bad = example_f();
    bad[7] = f64::NAN; // row 3
    let e = err(
        ContextualConfig::default(),
        f64_tensor(&bad, [6, 2]),
        &LABELS,
    );
    assert!(e.contains("row 3"), "{e}");
}

#[test]
fn contextual_similarity_rejects_bad_k_and_is_symmetric_in_unit_range() {
    let s = f64_tensor(&example_s(), [6, 6]);
    for k in [0, 1, 7] {
        let e = contextual_similarity(s.clone(), k, 0.05, 10.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("k = {k}")), "{e}");
    }
    let w = to_vec(contextual_similarity(s, 4, 0.05, 10.0).unwrap());
    // Spec §8 W, row 2: [0.6 0.75625 0.875 0.9125 0.41875 0.1875].
    assert_close(
        &w[12..18],
        &[0.6, 0.75625, 0.875, 0.9125, 0.41875, 0.1875],
        1e-12,
        "W row 2",
    );
    for i in 0..6 {
        for j in 0..6 {
            assert_eq!(w[i * 6 + j], w[j * 6 + i]);
            assert!((0.0..=1.0).contains(&w[i * 6 + j]));
        }
    }
}

#[test]
fn contextual_config_serde_defaults_and_round_trip() {
    let cfg: ContextualConfig = toml::from_str("k = 8\nconvention = \"p224\"").unwrap();
    assert_eq!(cfg.k, 8);
    assert_eq!(cfg.convention, Convention::P224);
    assert_eq!(cfg.eps, 0.05);
    assert_eq!(cfg.lambda, 0.4);
    assert_eq!(cfg.sim_target, 0.25);
    let back: ContextualConfig =
        serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert!(toml::from_str::<ContextualConfig>("kk = 3").is_err());
    assert_eq!(ContextualConfig::default().weights(), (0.4, 0.5, 0.1));
    assert_eq!(cfg.kernel, Kernel::Fused);
    let graph: ContextualConfig = toml::from_str("kernel = \"graph\"").unwrap();
    assert_eq!(graph.kernel, Kernel::Graph);
    assert!(toml::from_str::<ContextualConfig>("kernel = \"gpu\"").is_err());
}

// ---------------------------------------------------------------------------------------------
// contrastive

/// Plain-Rust count-normalised contrastive of §2.2.
fn contrastive_reference(s: &[f64], labels: &[i64], mp: f64, mn: f64) -> f64 {
    let n = labels.len();
    let (mut sp, mut cp, mut sn, mut cn) = (0.0, 0, 0.0, 0);
    for i in 0..n {
        for j in 0..n {
            let v = s[i * n + j];
            if labels[i] == labels[j] {
                if mp - v > 0.0 {
                    sp += mp - v;
                    cp += 1;
                }
            } else if v - mn > 0.0 {
                sn += v - mn;
                cn += 1;
            }
        }
    }
    (if cp > 0 { sp / cp as f64 } else { 0.0 }) + (if cn > 0 { sn / cn as f64 } else { 0.0 })
}

#[test]
fn contrastive_worked_example_value_and_gradient() {
    let s = f64_tensor(&example_s(), [6, 6]).require_grad();
    let same = same_label_matrix(&LABELS, &device(), DType::F64);
    let l = contrastive_on_similarity(s.clone(), same, 0.75, 0.6);
    let g = to_vec(s.grad(&l.backward()).unwrap());
    assert!((scalar(l) - 0.40284617).abs() < 6e-9);
    assert_close(&g, &SPEC_G_CON, 1e-12, "∂L_con/∂S");
}

#[test]
fn contrastive_baseline_matches_reference_and_finite_differences() {
    let loss = ContrastiveConfig::default().init().unwrap();
    assert_eq!(loss.config().pos_margin, 0.9);
    assert_eq!(loss.config().neg_margin, 0.6);
    let out = loss
        .forward(f64_tensor(&example_f(), [6, 2]), &LABELS)
        .unwrap();
    let expected = contrastive_reference(&example_s(), &LABELS, 0.9, 0.6);
    assert!((scalar(out.total) - expected).abs() < 1e-12);

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..3 {
        let (z, labels) = clustered_batch(&mut rng, 3, 3, 4);
        let f = |t: Tensor<2>| loss.forward(t, &labels).unwrap().total;
        gradient_check(&f, &z, [9, 4], "contrastive");
    }
}

#[test]
fn contrastive_with_no_active_pair_is_exactly_zero() {
    // Two orthogonal classes, each collapsed: all positives at 1 > m⁺, negatives at 0 < m⁻.
    let z = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
    let loss = ContrastiveConfig::default().init().unwrap();
    let out = loss.forward(f64_tensor(&z, [4, 2]), &[0, 0, 1, 1]).unwrap();
    assert_eq!(scalar(out.total), 0.0);
}

#[test]
fn contrastive_bad_input_errors() {
    let loss = ContrastiveConfig::default().init().unwrap();
    let e = loss
        .forward(f64_tensor(&example_f(), [6, 2]), &LABELS[..4])
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels has 4"), "{e}");
    let mut bad = example_f();
    bad[0] = f64::INFINITY;
    let e = loss
        .forward(f64_tensor(&bad, [6, 2]), &LABELS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 0"), "{e}");
    let e = ContrastiveConfig {
        pos_margin: 1.5,
        neg_margin: 0.6,
    }
    .init()
    .unwrap_err()
    .to_string();
    assert!(e.contains("pos_margin"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// log-ratio: spec §6 worked example

const LR_F: [f64; 10] = [0.5, 0.25, 1.0, 0.0, 0.0, 2.0, -1.5, -0.5, 2.0, 2.0];
const LR_Y: [f64; 5] = [0.0, 1.0, 1.5, 3.0, 4.0];

fn lr_loss(cfg: &LogRatioConfig, labels: Vec<f32>) -> impl Fn(Tensor<2>) -> Tensor<1> {
    let loss = cfg.init().unwrap();
    move |t: Tensor<2>| loss.forward(t, &labels).unwrap().total
}

fn paper_form() -> LogRatioConfig {
    LogRatioConfig {
        distance: LogRatioDistance::Squared,
        eps_in_per_dim: 0.0,
        log_eps: 0.0,
        ..LogRatioConfig::default()
    }
}

#[test]
fn log_ratio_mode_a_code_form() {
    let f = lr_loss(&LogRatioConfig::default(), abs_label_dist(&LR_Y));
    let (l, g) = value_and_grad(&f, &LR_F, [5, 2]);
    assert!((l - 0.25721322310803246).abs() < 1e-12, "L_A = {l}");
    let expected = [
        0.7370696055,
        -0.5432874712,
        -0.5582820846,
        0.2791410423,
        -0.1032741527,
        0.3614595343,
        0.0116389589,
        0.0043646096,
        -0.0871523271,
        -0.1016777150,
    ];
    assert_close(&g, &expected, 1e-9, "∂L_A/∂F");
    // Scale: L_A(3F) = 0.2572351332 (differs only through ε).
    let f3: Vec<f64> = LR_F.iter().map(|v| 3.0 * v).collect();
    let (l3, _) = value_and_grad(&f, &f3, [5, 2]);
    assert!((l3 - 0.2572351332).abs() < 1e-10, "L_A(3F) = {l3}");
    // f32: within 1e-5 relative.
    let loss = LogRatioConfig::default().init().unwrap();
    let l32 = scalar(
        loss.forward(tensor(&LR_F, [5, 2], DType::F32), &abs_label_dist(&LR_Y))
            .unwrap()
            .total,
    );
    assert!(
        ((l32 - 0.25721322310803246) / 0.25721322310803246).abs() < 1e-5,
        "f32 L_A = {l32}"
    );
}

#[test]
fn log_ratio_mode_b_paper_form() {
    let f = lr_loss(&paper_form(), abs_label_dist(&LR_Y));
    let (l, g) = value_and_grad(&f, &LR_F, [5, 2]);
    assert!((l - 1.0289519694615443).abs() < 1e-12, "L_B = {l}");
    let expected = [
        2.9491564853,
        -2.1736553744,
        -2.2339683820,
        1.1169841910,
        -0.4131169591,
        1.4459093570,
        0.0465117962,
        0.0174419236,
        -0.3485829404,
        -0.4066800971,
    ];
    assert_close(&g, &expected, 1e-9, "∂L_B/∂F");
}

#[test]
fn log_ratio_mode_c_batch_all() {
    let cfg = LogRatioConfig {
        anchors: AnchorMode::All,
        ..paper_form()
    };
    assert_eq!(cfg.effective_ties(), TiePolicy::Exclude);
    let f = lr_loss(&cfg, abs_label_dist(&LR_Y));
    let (l, g) = value_and_grad(&f, &LR_F, [5, 2]);
    assert!((l - 4.829572608143745).abs() < 1e-11, "L_C = {l}");
    let expected = [
        1.7746504589,
        -0.9422737342,
        -1.2768701489,
        0.3218106215,
        0.0834383036,
        1.2168764511,
        0.0033757865,
        -0.2233758431,
        -0.5845944002,
        -0.3730374953,
    ];
    assert_close(&g, &expected, 1e-9, "∂L_C/∂F");
}

#[test]
fn log_ratio_zero_label_distance_policies() {
    let mut labels = abs_label_dist(&LR_Y);
    labels[1] = 0.0; // g_1 = 0 from the anchor
    labels[5] = 0.0;
    let l = |cfg: LogRatioConfig| {
        let f = lr_loss(&cfg, labels.clone());
        value_and_grad(&f, &LR_F, [5, 2]).0
    };
    let log_eps = l(LogRatioConfig::default());
    assert!((log_eps - 90.87).abs() < 0.005, "log_eps policy: {log_eps}");
    let floor = l(LogRatioConfig {
        zero_label: ZeroLabelPolicy::Floor(1e-3),
        ..LogRatioConfig::default()
    });
    assert!((floor - 21.70).abs() < 0.005, "floor policy: {floor}");

    // skip: same as the batch without member 1.
    let skip = l(LogRatioConfig {
        zero_label: ZeroLabelPolicy::Skip,
        ..LogRatioConfig::default()
    });
    let keep = [0usize, 2, 3, 4];
    let f_small: Vec<f64> = keep
        .iter()
        .flat_map(|&i| [LR_F[2 * i], LR_F[2 * i + 1]])
        .collect();
    let y_small: Vec<f64> = keep.iter().map(|&i| LR_Y[i]).collect();
    let f = lr_loss(&LogRatioConfig::default(), abs_label_dist(&y_small));
    let (expected, _) = value_and_grad(&f, &f_small, [4, 2]);
    assert!((skip - expected).abs() < 1e-12, "skip {skip} vs {expected}");
}

/// Brute-force log-ratio: enumerate every triplet (a, i, j), i before j.
fn log_ratio_brute(x: &[f64], d: usize, labels: &[f32], cfg: &LogRatioConfig) -> f64 {
    let b = labels.len().isqrt();
    let eps_in = cfg.eps_in_per_dim / d as f64;
    let anchors: Vec<usize> = match cfg.anchors {
        AnchorMode::First => vec![0],
        AnchorMode::All => (0..b).collect(),
    };
    let include_ties = cfg.effective_ties() == TiePolicy::Include;
    let (mut sum, mut count) = (0.0, 0usize);
    for &a in &anchors {
        let label = |k: usize| -> Option<f64> {
            let g = labels[a * b + k] as f64;
            let g = match cfg.zero_label {
                ZeroLabelPolicy::LogEps => g,
                ZeroLabelPolicy::Skip => {
                    if g == 0.0 {
                        return None;
                    }
                    g
                }
                ZeroLabelPolicy::Floor(v) => g.max(v),
            };
            Some(match cfg.distance {
                LogRatioDistance::Plain => g,
                LogRatioDistance::Squared => g * g,
            })
        };
        let u = |k: usize| -> f64 {
            let s: f64 = (0..d).map(|j| (x[a * d + j] - x[k * d + j]).powi(2)).sum();
            let delta = match cfg.distance {
                LogRatioDistance::Plain => (s + eps_in).sqrt(),
                LogRatioDistance::Squared => s + eps_in,
            };
            (delta + cfg.log_eps).ln() - (label(k).unwrap() + cfg.log_eps).ln()
        };
        for i in 0..b {
            for j in i + 1..b {
                if i == a || j == a || label(i).is_none() || label(j).is_none() {
                    continue;
                }
                if !include_ties && label(i) == label(j) {
                    continue;
                }
                sum += (u(i) - u(j)).powi(2);
                count += 1;
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

#[test]
fn log_ratio_all_modes_match_brute_force_with_ties_and_zeros() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let (b, d) = (9, 3);
    for trial in 0..4 {
        let x = gaussian_matrix(&mut rng, b, d);
        // Integer labels: many ties and zero distances.
        let y: Vec<f64> = (0..b).map(|_| rng.random_range(0..4) as f64).collect();
        let labels = abs_label_dist(&y);
        for anchors in [AnchorMode::First, AnchorMode::All] {
            for ties in [None, Some(TiePolicy::Include), Some(TiePolicy::Exclude)] {
                for zero_label in [
                    ZeroLabelPolicy::LogEps,
                    ZeroLabelPolicy::Skip,
                    ZeroLabelPolicy::Floor(0.5),
                ] {
                    for distance in [LogRatioDistance::Plain, LogRatioDistance::Squared] {
                        let cfg = LogRatioConfig {
                            anchors,
                            ties,
                            zero_label,
                            distance,
                            ..LogRatioConfig::default()
                        };
                        let f = lr_loss(&cfg, labels.clone());
                        let (l, _) = value_and_grad(&f, &x, [b, d]);
                        let expected = log_ratio_brute(&x, d, &labels, &cfg);
                        assert!(
                            (l - expected).abs() <= 1e-10 * expected.abs().max(1.0),
                            "trial {trial} {cfg:?}: {l} vs brute force {expected}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn log_ratio_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (b, d) = (7, 3);
    for trial in 0..2 {
        let x = gaussian_matrix(&mut rng, b, d);
        let y: Vec<f64> = (0..b)
            .map(|_| rng.random_range(0..5) as f64 * 0.7)
            .collect();
        let labels = abs_label_dist(&y);
        for anchors in [AnchorMode::First, AnchorMode::All] {
            for ties in [TiePolicy::Include, TiePolicy::Exclude] {
                for distance in [LogRatioDistance::Plain, LogRatioDistance::Squared] {
                    let cfg = LogRatioConfig {
                        anchors,
                        ties: Some(ties),
                        distance,
                        zero_label: ZeroLabelPolicy::Floor(0.1),
                        ..LogRatioConfig::default()
                    };
                    let f = lr_loss(&cfg, labels.clone());
                    gradient_check(&f, &x, [b, d], &format!("log_ratio trial {trial} {cfg:?}"));
                }
            }
        }
    }
}

#[test]
fn log_ratio_is_invariant_to_member_order_and_nearly_to_scale() {
    let perm = [0usize, 3, 1, 4, 2];
    let x: Vec<f64> = perm
        .iter()
        .flat_map(|&i| [LR_F[2 * i], LR_F[2 * i + 1]])
        .collect();
    let y: Vec<f64> = perm.iter().map(|&i| LR_Y[i]).collect();
    for anchors in [AnchorMode::First, AnchorMode::All] {
        let cfg = LogRatioConfig {
            anchors,
            ..LogRatioConfig::default()
        };
        let a = value_and_grad(&lr_loss(&cfg, abs_label_dist(&LR_Y)), &LR_F, [5, 2]).0;
        let b = value_and_grad(&lr_loss(&cfg, abs_label_dist(&y)), &x, [5, 2]).0;
        assert!((a - b).abs() < 1e-12, "{anchors:?}: {a} vs {b}");
    }
    // Without ε, exactly scale-invariant.
    let f = lr_loss(&paper_form(), abs_label_dist(&LR_Y));
    let x7: Vec<f64> = LR_F.iter().map(|v| 7.0 * v).collect();
    let (l1, _) = value_and_grad(&f, &LR_F, [5, 2]);
    let (l7, _) = value_and_grad(&f, &x7, [5, 2]);
    assert!((l1 - l7).abs() < 1e-12);
}

#[test]
fn log_ratio_batch_all_f32_is_accurate_far_from_the_origin() {
    // Distances are translation invariant; the Gram expansion is not, in f32, unless the loss
    // centres the batch first. Offset 1000: ‖x‖² ≈ 1e6, whose f32 ulp (0.06) would swamp them.
    let cfg = LogRatioConfig {
        anchors: AnchorMode::All,
        ..LogRatioConfig::default()
    };
    let labels = abs_label_dist(&LR_Y);
    let loss = cfg.init().unwrap();
    let exact = scalar(
        loss.forward(f64_tensor(&LR_F, [5, 2]), &labels)
            .unwrap()
            .total,
    );
    let shifted: Vec<f64> = LR_F.iter().map(|v| v + 1000.0).collect();
    let l32 = scalar(
        loss.forward(tensor(&shifted, [5, 2], DType::F32), &labels)
            .unwrap()
            .total,
    );
    assert!(
        ((l32 - exact) / exact).abs() < 1e-4,
        "f32 {l32} vs f64 {exact}"
    );
}

#[test]
fn log_ratio_bad_input_errors() {
    let loss = LogRatioConfig::default().init().unwrap();
    let x = f64_tensor(&LR_F, [5, 2]);
    let e = loss.forward(x.clone(), &[0.0; 24]).unwrap_err().to_string();
    assert!(e.contains("label_dist has 24") && e.contains("25"), "{e}");
    let mut labels = abs_label_dist(&LR_Y);
    labels[3] = -1.0;
    let e = loss.forward(x.clone(), &labels).unwrap_err().to_string();
    assert!(e.contains("label_dist[0][3]"), "{e}");
    labels[3] = f32::NAN;
    assert!(loss.forward(x, &labels).is_err());
    let mut bad = LR_F;
    bad[9] = f64::NAN;
    let e = loss
        .forward(f64_tensor(&bad, [5, 2]), &abs_label_dist(&LR_Y))
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 4"), "{e}");
    let e = loss
        .forward(f64_tensor(&LR_F[..4], [2, 2]), &[0.0; 4])
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 3"), "{e}");
    let e = LogRatioConfig {
        zero_label: ZeroLabelPolicy::Floor(0.0),
        ..Default::default()
    }
    .init()
    .unwrap_err()
    .to_string();
    assert!(e.contains("floor"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// triplet baselines

/// Brute-force triplet on normalised rows: positives `pos`, negatives `neg` (member indices).
fn triplet_brute(x: &[f64], d: usize, pairs: &[(usize, usize)], margin: f64) -> f64 {
    let b = x.len() / d;
    let f: Vec<Vec<f64>> = (0..b)
        .map(|i| {
            let row = &x[i * d..(i + 1) * d];
            let norm = (row.iter().map(|v| v * v).sum::<f64>() + 1e-10).sqrt();
            row.iter().map(|v| v / norm).collect()
        })
        .collect();
    let dist = |k: usize| -> f64 {
        (0..d).map(|j| (f[0][j] - f[k][j]).powi(2)).sum::<f64>() + 1e-4 / d as f64
    };
    pairs
        .iter()
        .map(|&(p, n)| (dist(p) - dist(n) + margin).max(1e-12))
        .sum::<f64>()
        / pairs.len() as f64
}

#[test]
fn dense_triplet_worked_example_and_order_invariance() {
    let loss = DenseTripletConfig::default().init().unwrap();
    let labels = abs_label_dist(&LR_Y);
    let l = scalar(
        loss.forward(f64_tensor(&LR_F, [5, 2]), &labels)
            .unwrap()
            .total,
    );
    assert!((l - 0.8464528669547372).abs() < 1e-12, "dense triplet {l}");
    // Shuffling the members (with their labels) must not matter: the loss sorts them.
    let perm = [0usize, 4, 2, 1, 3];
    let x: Vec<f64> = perm
        .iter()
        .flat_map(|&i| [LR_F[2 * i], LR_F[2 * i + 1]])
        .collect();
    let y: Vec<f64> = perm.iter().map(|&i| LR_Y[i]).collect();
    let l2 = scalar(
        loss.forward(f64_tensor(&x, [5, 2]), &abs_label_dist(&y))
            .unwrap()
            .total,
    );
    assert!((l - l2).abs() < 1e-12);
}

#[test]
fn dense_triplet_matches_brute_force_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let (b, d) = (8, 4);
    let loss = DenseTripletConfig {
        margin: 0.5,
        ..Default::default()
    }
    .init()
    .unwrap();
    for _ in 0..3 {
        let x = gaussian_matrix(&mut rng, b, d);
        let y: Vec<f64> = (0..b).map(|_| rng.random::<f64>() * 3.0).collect();
        let labels = abs_label_dist(&y);
        let mut order: Vec<usize> = (1..b).collect();
        order.sort_by(|&i, &j| labels[i].partial_cmp(&labels[j]).unwrap());
        let pairs: Vec<(usize, usize)> = (0..order.len())
            .flat_map(|i| (i + 1..order.len()).map(move |j| (i, j)))
            .map(|(i, j)| (order[i], order[j]))
            .collect();
        let expected = triplet_brute(&x, d, &pairs, 0.5);
        let f = |t: Tensor<2>| loss.forward(t, &labels).unwrap().total;
        let (l, _) = value_and_grad(&f, &x, [b, d]);
        assert!((l - expected).abs() < 1e-12, "{l} vs {expected}");
        gradient_check(&f, &x, [b, d], "dense_triplet");
    }
}

#[test]
fn binary_triplet_matches_brute_force_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (b, d, n_pos) = (9, 3, 3);
    let loss = BinaryTripletConfig {
        positives: n_pos,
        ..Default::default()
    }
    .init()
    .unwrap();
    assert_eq!(BinaryTripletConfig::default().margin, 0.2);
    for _ in 0..3 {
        let x = gaussian_matrix(&mut rng, b, d);
        let y: Vec<f64> = (0..b).map(|_| rng.random::<f64>()).collect();
        let labels = abs_label_dist(&y);
        let mut order: Vec<usize> = (1..b).collect();
        order.sort_by(|&i, &j| labels[i].partial_cmp(&labels[j]).unwrap());
        let pairs: Vec<(usize, usize)> = order[..n_pos]
            .iter()
            .flat_map(|&p| order[n_pos..].iter().map(move |&n| (p, n)))
            .collect();
        assert_eq!(pairs.len(), n_pos * (b - 1 - n_pos));
        let expected = triplet_brute(&x, d, &pairs, 0.2);
        let f = |t: Tensor<2>| loss.forward(t, &labels).unwrap().total;
        let (l, _) = value_and_grad(&f, &x, [b, d]);
        assert!((l - expected).abs() < 1e-12, "{l} vs {expected}");
        gradient_check(&f, &x, [b, d], "binary_triplet");
    }
}

#[test]
fn binary_triplet_hand_computed_value() {
    // Anchor (1,0); positive at 90° (D = 2), negatives at 0° (D = 0) and 180° (D = 4); ε_in = 5e-5
    // cancels. Terms: max(2 − 0 + 0.2, ·) = 2.2 and max(2 − 4 + 0.2, 1e-12) = 1e-12.
    let x = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, -1.0, 0.0];
    let y = [0.0, 0.1, 0.5, 0.9];
    let loss = BinaryTripletConfig {
        positives: 1,
        ..Default::default()
    }
    .init()
    .unwrap();
    let l = scalar(
        loss.forward(f64_tensor(&x, [4, 2]), &abs_label_dist(&y))
            .unwrap()
            .total,
    );
    assert!((l - (2.2 + 1e-12) / 2.0).abs() < 1e-9, "{l}");
    let e = BinaryTripletConfig {
        positives: 3,
        ..Default::default()
    }
    .init()
    .unwrap()
    .forward(f64_tensor(&x, [4, 2]), &abs_label_dist(&y))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("positives = 3") && e.contains("batch of 4"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// continuous-loss config

#[test]
fn continuous_loss_config_parses_and_dispatches() {
    let cfg: ContinuousLossConfig =
        toml::from_str("name = \"log_ratio\"\ndistance = \"squared\"").unwrap();
    match &cfg {
        ContinuousLossConfig::LogRatio(c) => {
            assert_eq!(c.distance, LogRatioDistance::Squared);
            assert_eq!(c.log_eps, 1e-6);
            assert_eq!(c.zero_label, ZeroLabelPolicy::LogEps);
        }
        other => panic!("parsed {other:?}"),
    }
    let cfg: ContinuousLossConfig = serde_json::from_str(
        r#"{"name":"log_ratio","anchors":"all","zero_label":{"floor":0.001}}"#,
    )
    .unwrap();
    let ContinuousLossConfig::LogRatio(c) = &cfg else {
        panic!()
    };
    assert_eq!(c.anchors, AnchorMode::All);
    assert_eq!(c.zero_label, ZeroLabelPolicy::Floor(0.001));
    let back: ContinuousLossConfig =
        serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);

    let dense: ContinuousLossConfig = toml::from_str("name = \"dense_triplet\"").unwrap();
    let loss = dense.init().unwrap();
    assert_eq!(loss.name(), "dense_triplet");
    let l = scalar(
        loss.forward(f64_tensor(&LR_F, [5, 2]), &abs_label_dist(&LR_Y))
            .unwrap()
            .total,
    );
    assert!((l - 0.8464528669547372).abs() < 1e-12);

    let binary: ContinuousLossConfig =
        toml::from_str("name = \"binary_triplet\"\npositives = 2").unwrap();
    assert_eq!(binary.init().unwrap().name(), "binary_triplet");
    assert_eq!(
        ContinuousLossConfig::default().init().unwrap().name(),
        "log_ratio"
    );
    assert!(toml::from_str::<ContinuousLossConfig>("name = \"nope\"").is_err());
    assert!(
        toml::from_str::<ContinuousLossConfig>("name = \"dense_triplet\"\nmargn = 1.0").is_err()
    );
}
