//! Similarity and distance matrices on embedding tensors.
//!
//! Every function is plain differentiable tensor algebra, so gradients reach the embeddings
//! through burn's autodiff. Masks and label matrices built here carry the dtype of the
//! embeddings, so the same code runs in f32 (training) and f64 (gradient checks).

use burn::prelude::*;
use burn::tensor::DType;

/// Default `eps` of [`l2_normalize`] for losses that work on the unit sphere: `1e-12`,
/// as in the contextual-loss P224 code path (`contextual-loss.md` §4.2, "+1e-12 inside the
/// sqrt"). It only matters for rows whose norm is itself below `1e-6`.
pub const NORMALIZE_EPS: f64 = 1e-12;

/// Row-wise L2 normalisation `f_i = z_i / sqrt(‖z_i‖² + eps)` of an `n × d` tensor.
///
/// `eps` sits inside the square root so the map is smooth everywhere, including at `z = 0`
/// (where it returns 0 instead of NaN). Its Jacobian is the tangential projection
/// `(I − f fᵀ)/‖z‖` up to `O(eps/‖z‖²)`, so a gradient along `f` itself is annihilated.
pub fn l2_normalize(x: Tensor<2>, eps: f64) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).add_scalar(eps).sqrt();
    x / norm
}

/// Cosine similarity matrix `S_ij = ⟨a_i, b_j⟩ / (‖a_i‖ ‖b_j‖)` between the rows of `a`
/// (`n × d`) and `b` (`m × d`); each row is normalised with [`l2_normalize`] and
/// [`NORMALIZE_EPS`]. Shape `n × m`.
pub fn cosine_similarity_matrix(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let a = l2_normalize(a, NORMALIZE_EPS);
    let b = l2_normalize(b, NORMALIZE_EPS);
    a.matmul(b.transpose())
}

/// Squared Euclidean distance matrix `D_ij = ‖a_i − b_j‖²` (`n × m`), computed as
/// `‖a_i‖² + ‖b_j‖² − 2⟨a_i, b_j⟩` and clamped at 0.
///
/// The expansion costs one GEMM instead of an `n × m × d` tensor. Its cancellation error is
/// about `ulp(‖a‖²)`, so entries that should be ~0 come out as ±1e-7 (f32); the clamp removes
/// the negative ones. Use [`squared_distances_to_row`] where small distances must be exact.
pub fn squared_euclidean_matrix(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let a_sq = a.clone().square().sum_dim(1); // n × 1
    let b_sq = b.clone().square().sum_dim(1).transpose(); // 1 × m
    let cross = a.matmul(b.transpose());
    (a_sq + b_sq - cross.mul_scalar(2.0)).clamp_min(0.0)
}

/// Squared Euclidean distances `s_k = ‖x_k − x_row‖²` from one row of `x` (`n × d`) to every
/// row, as an `n × 1` column (`s_row = 0`).
///
/// Computed from the differences themselves rather than from a Gram expansion, so small
/// distances keep full relative precision (the single-anchor losses take their log).
pub fn squared_distances_to_row(x: Tensor<2>, row: usize) -> Tensor<2> {
    let anchor = x.clone().narrow(0, row, 1); // 1 × d, broadcast over rows
    (x - anchor).square().sum_dim(1)
}

/// The `n × n` same-class matrix `Y_ij = 1[labels_i = labels_j]` (diagonal 1), on `device`
/// with float dtype `dtype`. No gradient.
pub fn same_label_matrix(labels: &[i64], device: &Device, dtype: DType) -> Tensor<2> {
    let n = labels.len();
    let mut data = Vec::with_capacity(n * n);
    for &li in labels {
        data.extend(labels.iter().map(|&lj| if li == lj { 1.0f64 } else { 0.0 }));
    }
    Tensor::from_data(TensorData::new(data, [n, n]), (device, dtype))
}

/// Index of the first row of `x` (`n × d`) holding a NaN or an infinity, if any.
///
/// Reads one boolean per row back to the host, so it synchronises with the device.
pub fn first_non_finite_row(x: &Tensor<2>) -> Option<usize> {
    let bad_rows = x.clone().is_finite().bool_not().any_dim(1);
    let flags = bad_rows.try_into_vec_as::<bool>().ok()?;
    flags.iter().position(|&bad| bad)
}
