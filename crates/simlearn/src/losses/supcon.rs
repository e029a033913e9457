//! Supervised contrastive loss (Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu,
//! Krishnan, "Supervised Contrastive Learning", NeurIPS 2020, the `L_out` form) with
//! pytorch-metric-learning's `SupConLoss` semantics.
//!
//! With `S_ij` the cosine similarity of the L2-normalised embeddings, `τ` the temperature,
//! `P_i` the other members of `i`'s class and `A_i = {j ≠ i}` all other rows:
//!
//! `ℓ_i = −(1/|P_i|) Σ_{p∈P_i} [ S_ip/τ − log Σ_{a∈A_i} e^{S_ia/τ} ]`
//!
//! Anchors without positives have `ℓ_i = 0`. The loss is the mean of `ℓ_i` over the anchors with
//! `ℓ_i > 0` (PML's default `AvgNonZeroReducer`); a batch without any positive pair or without
//! any negative pair gives 0 with a zero gradient (PML).
//!
//! Default `τ = 0.1`: PML `SupConLoss()` default, the value used for the paper's supervised
//! experiments by Khosla et al.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    bool_mask, check_param, cosine_matrix, label_masks, masked_logsumexp, validate_batch, zero_loss,
};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`SupConLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupConConfig {
    /// Softmax temperature τ (PML default 0.1).
    pub temperature: f64,
}

impl Default for SupConConfig {
    fn default() -> Self {
        Self { temperature: 0.1 }
    }
}

impl SupConConfig {
    /// Builds the loss. Errors unless τ > 0.
    pub fn init(&self) -> Result<SupConLoss, LossError> {
        check_param(
            "supcon",
            "temperature",
            self.temperature,
            |v| v > 0.0,
            "> 0",
        )?;
        Ok(SupConLoss {
            temperature: self.temperature,
        })
    }
}

/// Supervised contrastive loss; see the module documentation.
#[derive(Module, Debug)]
pub struct SupConLoss {
    temperature: f64,
}

impl ClassLoss for SupConLoss {
    fn name(&self) -> &'static str {
        "supcon"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("supcon", &embeddings, labels)?;
        let (pos, neg) = label_masks(labels);
        if !pos.iter().any(|&b| b) || !neg.iter().any(|&b| b) {
            let total = zero_loss(embeddings);
            return Ok(LossOutput {
                terms: vec![("supcon", total.clone())],
                total,
            });
        }
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let logits = cosine_matrix(embeddings).div_scalar(self.temperature);
        let others: Vec<bool> = pos.iter().zip(&neg).map(|(&p, &q)| p || q).collect();
        let denom = masked_logsumexp(logits.clone(), bool_mask(others, [n, n], &device), false);
        let counts: Vec<f64> = pos
            .chunks(n)
            .map(|row| row.iter().filter(|&&b| b).count().max(1) as f64)
            .collect();
        let pos_mask = bool_mask(pos, [n, n], &device);
        let log_prob = (logits - denom).mask_fill(pos_mask.bool_not(), 0.0);
        let counts = super::baseline_util::constant(counts, [n, 1], &device, dtype);
        let per_anchor = (log_prob.sum_dim(1) / counts).neg();
        // The number of anchors with a positive loss is a constant of the step (PML).
        let active = per_anchor
            .clone()
            .greater_elem(0.0)
            .int()
            .sum()
            .into_scalar::<i64>()
            .max(1);
        let total = per_anchor.clamp_min(0.0).sum().div_scalar(active as f64);
        Ok(LossOutput {
            terms: vec![("supcon", total.clone())],
            total,
        })
    }
}
