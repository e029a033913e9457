//! Plumbing shared by the baseline losses and the miners: input validation, the host copy of a
//! batch, L2 normalisation, label masks and masked log-sum-exp reductions.
//!
//! Every helper keeps the dtype of the embeddings it is given (f32 in training, f64 in the
//! gradient-check tests), so constants are created with `(&device, dtype)` of the input.

use burn::prelude::*;
use burn::tensor::DType;

use super::LossError;

/// Stand-in for −∞ in masked reductions: finite so that `x − max` never computes `∞ − ∞`, and
/// `exp` of it underflows to exactly 0 in f32 and f64.
pub(crate) const MASKED: f64 = -1.0e30;

/// `eps` of [`l2_normalize`] (added to the squared norm), the crate-wide
/// [`crate::distances::NORMALIZE_EPS`].
pub(crate) const NORM_EPS: f64 = crate::distances::NORMALIZE_EPS;

/// The embeddings of a batch read back to the host (row-major `n × d`, f64), for validation and
/// for the miners, which select tuples from plain numbers.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// Batch size.
    pub n: usize,
    /// Embedding dimension.
    pub d: usize,
    /// Row-major `n × d` values.
    pub values: Vec<f64>,
}

impl HostBatch {
    /// Row `i` of the batch.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.d..(i + 1) * self.d]
    }

    /// The batch with every row scaled to unit L2 norm (`x / sqrt(‖x‖² + 1e-12)`, as
    /// [`l2_normalize`]).
    pub fn normalized(&self) -> HostBatch {
        let mut values = self.values.clone();
        for row in values.chunks_mut(self.d.max(1)) {
            let norm = (row.iter().map(|v| v * v).sum::<f64>() + NORM_EPS).sqrt();
            row.iter_mut().for_each(|v| *v /= norm);
        }
        HostBatch {
            n: self.n,
            d: self.d,
            values,
        }
    }

    /// Row-major `n × n` dot products of the rows (cosine similarities once normalised).
    pub fn gram(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.n * self.n];
        for i in 0..self.n {
            for j in i..self.n {
                let s: f64 = self
                    .row(i)
                    .iter()
                    .zip(self.row(j))
                    .map(|(a, b)| a * b)
                    .sum();
                out[i * self.n + j] = s;
                out[j * self.n + i] = s;
            }
        }
        out
    }

    /// Row-major `n × n` Euclidean distances between the rows.
    pub fn euclidean(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.n * self.n];
        for i in 0..self.n {
            for j in (i + 1)..self.n {
                let s: f64 = self
                    .row(i)
                    .iter()
                    .zip(self.row(j))
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                out[i * self.n + j] = s.sqrt();
                out[j * self.n + i] = s.sqrt();
            }
        }
        out
    }
}

/// Checks a class-labelled batch; returns `(n, d)`.
///
/// Errors (one line naming the loss and the fault): empty batch or zero dimension, label count
/// different from the number of rows, a non-finite embedding value (naming the first bad row).
/// Reads one flag per row back to the host (a device synchronisation).
pub(crate) fn validate_batch(
    loss: &str,
    embeddings: &Tensor<2>,
    labels: &[i64],
) -> Result<(usize, usize), LossError> {
    let [n, d] = embeddings.dims();
    if n == 0 || d == 0 {
        return Err(LossError::Invalid(format!(
            "{loss}: embeddings must be a non-empty n × d matrix, got {n} × {d}"
        )));
    }
    if labels.len() != n {
        return Err(LossError::Invalid(format!(
            "{loss}: labels has {} entries but embeddings has {n} rows",
            labels.len()
        )));
    }
    if let Some(row) = crate::distances::first_non_finite_row(embeddings) {
        return Err(LossError::Invalid(format!(
            "{loss}: embeddings row {row} contains a non-finite value"
        )));
    }
    Ok((n, d))
}

/// Reads a (validated) batch back to the host for a miner (detached, f64).
pub(crate) fn host_batch(loss: &str, embeddings: &Tensor<2>) -> Result<HostBatch, LossError> {
    let [n, d] = embeddings.dims();
    let values = embeddings
        .clone()
        .detach()
        .try_into_vec_as::<f64>()
        .map_err(|e| LossError::Invalid(format!("{loss}: cannot read embeddings: {e:?}")))?;
    Ok(HostBatch { n, d, values })
}

/// Row-wise `x / sqrt(‖x‖² + 1e-12)`: the crate's shared [`crate::distances::l2_normalize`].
/// PML's `F.normalize` divides by `max(‖x‖, 1e-12)` instead; the two agree to within 1e-12
/// relative for any row of norm above 1e-6.
pub(crate) fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    crate::distances::l2_normalize(x, NORM_EPS)
}

/// Cosine similarity matrix `Z Zᵀ` of the row-normalised embeddings.
pub(crate) fn cosine_matrix(embeddings: Tensor<2>) -> Tensor<2> {
    let z = l2_normalize(embeddings);
    z.clone().matmul(z.transpose())
}

/// Squared Euclidean distances `2 − 2·cos`, clamped at 0, of the row-normalised embeddings
/// (range [0, 4]).
pub(crate) fn squared_distance_matrix_normalized(embeddings: Tensor<2>) -> Tensor<2> {
    cosine_matrix(embeddings)
        .mul_scalar(-2.0)
        .add_scalar(2.0)
        .clamp_min(0.0)
}

/// Euclidean distances of the row-normalised embeddings. The squared distance is floored at
/// 1e-12 before the square root so that coincident points get a zero (not NaN) gradient, as
/// `torch.cdist` does.
pub(crate) fn distance_matrix_normalized(embeddings: Tensor<2>) -> Tensor<2> {
    squared_distance_matrix_normalized(embeddings)
        .clamp_min(1.0e-12)
        .sqrt()
}

/// A float constant of the given shape with the dtype and device of `like`.
pub(crate) fn constant<const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), (device, dtype))
}

/// A boolean mask of the given shape.
pub(crate) fn bool_mask(values: Vec<bool>, shape: [usize; 2], device: &Device) -> Tensor<2, Bool> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Integer index vector.
pub(crate) fn index_vector(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

/// Positive-pair mask (same label, `i ≠ j`) and negative-pair mask (different label), row-major.
pub(crate) fn label_masks(labels: &[i64]) -> (Vec<bool>, Vec<bool>) {
    let n = labels.len();
    let mut pos = vec![false; n * n];
    let mut neg = vec![false; n * n];
    for i in 0..n {
        for j in 0..n {
            if labels[i] == labels[j] {
                pos[i * n + j] = i != j;
            } else {
                neg[i * n + j] = true;
            }
        }
    }
    (pos, neg)
}

/// Row-wise masked log-sum-exp of a `r × c` matrix, returned as `r × 1`.
///
/// With `add_one`: `log(1 + Σ_{j∈mask_i} exp(x_ij))`, which is 0 for a row with an empty mask
/// (PML's `logsumexp(..., add_one=True)`). Without: `log Σ_{j∈mask_i} exp(x_ij)`, which is
/// [`MASKED`] (a stand-in for −∞) for an empty row. The row maximum is subtracted (detached)
/// for stability; masked-out entries receive exactly zero gradient.
pub(crate) fn masked_logsumexp(x: Tensor<2>, mask: Tensor<2, Bool>, add_one: bool) -> Tensor<2> {
    let xm = x.mask_fill(mask.clone().bool_not(), MASKED);
    let mut m = xm.clone().max_dim(1).detach();
    if add_one {
        m = m.clamp_min(0.0);
    }
    // Masked entries sit at MASKED − m: their exp underflows to exactly 0 unless the whole row
    // is masked (then m = MASKED too); those rows are overwritten below.
    let mut s = (xm - m.clone()).exp().sum_dim(1);
    if add_one {
        s = s + m.clone().neg().exp();
        m + s.log()
    } else {
        let empty = mask.any_dim(1).bool_not();
        (m + s.log()).mask_fill(empty, MASKED)
    }
}

/// Numerically stable `softplus(z) = log(1 + eᶻ) = max(z, 0) + log1p(e^{−|z|})`.
pub(crate) fn softplus_stable<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    z.clone().clamp_min(0.0) + z.abs().neg().exp().log1p()
}

/// A zero scalar attached to the graph of `embeddings`, so that `backward` works on batches
/// that yield no loss term (the gradient is zero, as PML's `zero_loss`).
pub(crate) fn zero_loss(embeddings: Tensor<2>) -> Tensor<1> {
    embeddings.mul_scalar(0.0).sum()
}

/// Rejects a non-finite or out-of-range hyper-parameter.
pub(crate) fn check_param(
    loss: &str,
    name: &str,
    value: f64,
    ok: impl Fn(f64) -> bool,
    requirement: &str,
) -> Result<(), LossError> {
    if value.is_finite() && ok(value) {
        Ok(())
    } else {
        Err(LossError::Invalid(format!(
            "{loss}: parameter `{name}` = {value} must be {requirement}"
        )))
    }
}

/// Checks that every label is a class index in `0..num_classes` (proxy losses).
pub(crate) fn check_class_labels(
    loss: &str,
    labels: &[i64],
    num_classes: usize,
) -> Result<(), LossError> {
    if let Some((row, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as u64 >= num_classes as u64)
    {
        return Err(LossError::Invalid(format!(
            "{loss}: label {label} at row {row} is outside 0..{num_classes} (remap labels to class indices)"
        )));
    }
    Ok(())
}

/// Standard-normal samples from a seeded ChaCha generator (Box–Muller), used for proxy
/// initialisation so that runs are reproducible from the config seed alone.
pub(crate) fn normal_samples(count: usize, std: f64, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        // u1 in (0, 1] keeps ln(u1) finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push(std * r * theta.cos());
        out.push(std * r * theta.sin());
    }
    out.truncate(count);
    out
}

/// A `num_classes × dim` proxy matrix as a trainable parameter, entries drawn from
/// `N(0, std²)` with a ChaCha8 generator seeded by `seed`, in the device's default float dtype.
pub(crate) fn init_proxies(
    loss: &str,
    num_classes: usize,
    dim: usize,
    std: f64,
    seed: u64,
    device: &Device,
) -> Result<burn::module::Param<Tensor<2>>, LossError> {
    if num_classes == 0 || dim == 0 {
        return Err(LossError::Invalid(format!(
            "{loss}: needs num_classes ≥ 1 and dim ≥ 1 for its proxies, got {num_classes} and {dim}"
        )));
    }
    let values = normal_samples(num_classes * dim, std, seed);
    let tensor = Tensor::<2>::from_data(TensorData::new(values, [num_classes, dim]), device);
    Ok(burn::module::Param::from_tensor(tensor))
}

/// Checks a proxy loss's batch: the usual batch checks, labels in `0..C`, and the embedding
/// width equal to the proxies'.
pub(crate) fn validate_proxy_batch(
    loss: &str,
    embeddings: &Tensor<2>,
    labels: &[i64],
    proxies: &Tensor<2>,
) -> Result<(usize, usize), LossError> {
    let (n, d) = validate_batch(loss, embeddings, labels)?;
    let [num_classes, dim] = proxies.dims();
    if d != dim {
        return Err(LossError::Invalid(format!(
            "{loss}: embeddings have dimension {d} but the proxies have {dim}"
        )));
    }
    check_class_labels(loss, labels, num_classes)?;
    Ok((n, d))
}

/// One-hot `n × C` mask of the labels (already checked to lie in `0..C`).
pub(crate) fn one_hot_mask(labels: &[i64], num_classes: usize, device: &Device) -> Tensor<2, Bool> {
    let n = labels.len();
    let mut values = vec![false; n * num_classes];
    for (i, &l) in labels.iter().enumerate() {
        values[i * num_classes + l as usize] = true;
    }
    bool_mask(values, [n, num_classes], device)
}

/// Default learning-rate multiplier of proxy parameters relative to the model's: 100, the
/// contextual paper's P224 setting for ProxyNCA, NormSoftmax and Proxy-Anchor and the
/// Proxy-Anchor reference (spec §7). (Its P256 recipe instead trains ProxyNCA/NormSoftmax
/// proxies with a separate Adam at lr 1e-3, wd 1e-4.)
pub(crate) const DEFAULT_PROXY_LR_MULTIPLIER: f64 = 100.0;
