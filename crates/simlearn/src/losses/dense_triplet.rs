//! Triplet loss on dense-triplet-mining batches ("Tri + Dense"), the main baseline of Kim et
//! al., CVPR 2019 (`log-ratio-loss.md` §4.1, from the authors' code).
//!
//! On a batch whose row 0 is the anchor `a`, with L2-normalised embeddings
//! `f = z / sqrt(‖z‖² + 1e-10)` and `D_k = ‖f_a − f_k‖² + ε_in`, `ε_in = 1e-4/d`:
//!
//! ```text
//! L = mean over pairs i < j in label order of  max(D_i − D_j + δ, 1e-12),   δ = 0.03
//! ```
//!
//! Every member ranked nearer the anchor in label space is a positive for every member ranked
//! farther: `m(m−1)/2` triplets for `m = B − 1` members. The members are sorted here by their
//! label distance to the anchor (row 0 of `label_dist`), ties keeping batch order, so the loss
//! does not depend on the sampler's ordering (§8.5). The floor `1e-12` (instead of 0) is the
//! reference's; inactive triplets still count in the mean.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distances::{l2_normalize, squared_distances_to_row};
use crate::losses::continuous::{check_continuous_batch, sort_members_by_label};
use crate::losses::log_ratio::{float_tensor, int_tensor};
use crate::losses::{ContinuousLoss, LossError, LossOutput};

/// `eps` of the L2 normalisation in both triplet baselines: `1e-10` inside the square root
/// (authors' code, §4.1).
pub const TRIPLET_NORMALIZE_EPS: f64 = 1e-10;

/// Floor of each triplet term in both triplet baselines (authors' code, §4.1).
pub const TRIPLET_FLOOR: f64 = 1e-12;

/// Configuration of [`DenseTripletLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseTripletConfig {
    /// Margin `δ` in squared-distance units. Default 0.03 (§4.1).
    pub margin: f64,
    /// `ε_in · d`: `eps_in_per_dim / d` is added to each squared distance. Default `1e-4`
    /// (§4.1).
    pub eps_in_per_dim: f64,
}

impl Default for DenseTripletConfig {
    fn default() -> Self {
        Self {
            margin: 0.03,
            eps_in_per_dim: 1e-4,
        }
    }
}

impl DenseTripletConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<DenseTripletLoss, LossError> {
        check_triplet_params("dense_triplet", self.margin, self.eps_in_per_dim)?;
        Ok(DenseTripletLoss {
            config: self.clone(),
        })
    }
}

/// Dense triplet loss (see the module documentation).
#[derive(Debug, Clone)]
pub struct DenseTripletLoss {
    config: DenseTripletConfig,
}

impl DenseTripletLoss {
    /// The configuration this loss was built from.
    pub fn config(&self) -> &DenseTripletConfig {
        &self.config
    }
}

impl ContinuousLoss for DenseTripletLoss {
    fn name(&self) -> &'static str {
        "dense_triplet"
    }

    fn forward(&self, embeddings: Tensor<2>, label_dist: &[f32]) -> Result<LossOutput, LossError> {
        let (b, d) = check_continuous_batch("dense_triplet", &embeddings, label_dist, 3, 1)?;
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let order = sort_members_by_label((1..b).collect(), |k| label_dist[k] as f64);
        let m = order.len();
        let dist = anchor_distances(embeddings, &order, self.config.eps_in_per_dim, d); // m × 1

        // hinge[i][j] = D_i − D_j + δ for members i, j in label order; keep i < j.
        let hinge = (dist.clone() - dist.transpose()).add_scalar(self.config.margin);
        let mut upper = vec![0.0; m * m];
        for i in 0..m {
            for j in i + 1..m {
                upper[i * m + j] = 1.0;
            }
        }
        let upper = float_tensor(upper, [m, m], &device, dtype);
        let pairs = m * (m - 1) / 2;
        let loss = (hinge.clamp_min(TRIPLET_FLOOR) * upper)
            .sum()
            .mul_scalar(1.0 / pairs as f64);
        Ok(LossOutput {
            total: loss.clone(),
            terms: vec![("dense_triplet", loss)],
        })
    }
}

/// `D_k = ‖f_0 − f_k‖² + eps_in_per_dim/d` on L2-normalised rows, for the members `order`
/// (in that order), as an `m × 1` column.
pub(crate) fn anchor_distances(
    embeddings: Tensor<2>,
    order: &[usize],
    eps_in_per_dim: f64,
    d: usize,
) -> Tensor<2> {
    let device = embeddings.device();
    let f = l2_normalize(embeddings, TRIPLET_NORMALIZE_EPS);
    let index = int_tensor(
        order.iter().map(|&k| k as i64).collect(),
        [order.len()],
        &device,
    );
    squared_distances_to_row(f, 0)
        .select(0, index)
        .add_scalar(eps_in_per_dim / d as f64)
}

pub(crate) fn check_triplet_params(
    loss: &str,
    margin: f64,
    eps_in_per_dim: f64,
) -> Result<(), LossError> {
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(LossError::Invalid(format!(
            "{loss}: margin = {margin} must be finite and ≥ 0"
        )));
    }
    if !(eps_in_per_dim.is_finite() && eps_in_per_dim >= 0.0) {
        return Err(LossError::Invalid(format!(
            "{loss}: eps_in_per_dim = {eps_in_per_dim} must be finite and ≥ 0"
        )));
    }
    Ok(())
}
