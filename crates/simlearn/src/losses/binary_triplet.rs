//! Triplet loss with kNN-binarised continuous labels ("Tri + Binary"), a baseline of Kim et
//! al., CVPR 2019 (`log-ratio-loss.md` §4.2, from the authors' code).
//!
//! The continuous labels are binarised by a kNN rule over the *dataset*: the 30 nearest label
//! neighbours of the anchor are its positives, everything else is negative. The sampler builds
//! each batch as `[a] ++ 5 positives (drawn from the top 30) ++ 144 negatives (drawn from rank
//! ≥ 30)`. On L2-normalised embeddings `f = z / sqrt(‖z‖² + 1e-10)` with
//! `D_k = ‖f_a − f_k‖² + 1e-4/d`:
//!
//! ```text
//! L = mean over all (p, n) of  max(D_p − D_n + 0.2, 1e-12)
//! ```
//!
//! **Which rows are positives.** The trait passes only the batch's label distances, and the
//! dataset-level top-30 rule cannot be recovered from them. The loss therefore takes a count,
//! [`BinaryTripletConfig::positives`] (default 5, §4.2): the `positives` members with the
//! smallest label distance to the anchor (row 0 of `label_dist`) are the positives, the rest
//! negatives. Because every drawn positive ranks within the anchor's top 30 and every drawn
//! negative ranks at 30 or beyond, these are exactly the sampler's positives; ties in label
//! distance keep batch order, so a sampler that emits `[a, positives…, negatives…]` is honoured
//! even when a negative ties with a positive at the rank-30 boundary.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::losses::continuous::{check_continuous_batch, sort_members_by_label};
use crate::losses::dense_triplet::{anchor_distances, check_triplet_params, TRIPLET_FLOOR};
use crate::losses::{ContinuousLoss, LossError, LossOutput};

/// Configuration of [`BinaryTripletLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BinaryTripletConfig {
    /// Number of positives in each batch: the members nearest the anchor in label distance.
    /// Default 5 (§4.2: `[a] ++ 5 positives ++ 144 negatives`).
    pub positives: usize,
    /// Margin in squared-distance units. Default 0.2 (§4.2).
    pub margin: f64,
    /// `ε_in · d`: `eps_in_per_dim / d` is added to each squared distance. Default `1e-4`
    /// (§4.2).
    pub eps_in_per_dim: f64,
}

impl Default for BinaryTripletConfig {
    fn default() -> Self {
        Self {
            positives: 5,
            margin: 0.2,
            eps_in_per_dim: 1e-4,
        }
    }
}

impl BinaryTripletConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<BinaryTripletLoss, LossError> {
        if self.positives == 0 {
            return Err(LossError::Invalid(
                "binary_triplet: positives = 0; need at least one positive per batch".into(),
            ));
        }
        check_triplet_params("binary_triplet", self.margin, self.eps_in_per_dim)?;
        Ok(BinaryTripletLoss {
            config: self.clone(),
        })
    }
}

/// Binary-label triplet loss (see the module documentation).
#[derive(Debug, Clone)]
pub struct BinaryTripletLoss {
    config: BinaryTripletConfig,
}

impl BinaryTripletLoss {
    /// The configuration this loss was built from.
    pub fn config(&self) -> &BinaryTripletConfig {
        &self.config
    }
}

impl ContinuousLoss for BinaryTripletLoss {
    fn name(&self) -> &'static str {
        "binary_triplet"
    }

    fn forward(&self, embeddings: Tensor<2>, label_dist: &[f32]) -> Result<LossOutput, LossError> {
        let (b, d) = check_continuous_batch("binary_triplet", &embeddings, label_dist, 3, 1)?;
        let n_pos = self.config.positives;
        if n_pos + 2 > b {
            return Err(LossError::Invalid(format!(
                "binary_triplet: positives = {n_pos} leaves no negative in a batch of {b} \
                 (anchor + positives + at least one negative)"
            )));
        }
        let order = sort_members_by_label((1..b).collect(), |k| label_dist[k] as f64);
        let m = order.len();
        let dist = anchor_distances(embeddings, &order, self.config.eps_in_per_dim, d); // m × 1
        let pos = dist.clone().narrow(0, 0, n_pos); // P × 1
        let neg = dist.narrow(0, n_pos, m - n_pos).transpose(); // 1 × N
        let loss = (pos - neg)
            .add_scalar(self.config.margin)
            .clamp_min(TRIPLET_FLOOR)
            .mean();
        Ok(LossOutput {
            total: loss.clone(),
            terms: vec![("binary_triplet", loss)],
        })
    }
}
