//! NT-Xent / InfoNCE loss (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for
//! Contrastive Learning of Visual Representations" (SimCLR), ICML 2020; Oord et al. 2018) with
//! pytorch-metric-learning's `NTXentLoss` semantics on labelled batches.
//!
//! With `S_ij` the cosine similarity of the L2-normalised embeddings and `τ` the temperature,
//! every positive pair `(a, p)` (same label, `a ≠ p`) is one softmax classification of `p`
//! against the anchor's negatives `N_a` (different label):
//!
//! `ℓ(a, p) = −log( e^{S_ap/τ} / (e^{S_ap/τ} + Σ_{k∈N_a} e^{S_ak/τ}) ) = softplus(LSE_{k∈N_a}(S_ak/τ) − S_ap/τ)`
//!
//! and the loss is the mean of `ℓ` over all positive pairs (PML's `MeanReducer` on
//! `pos_pair` losses). An anchor without negatives gives `ℓ = 0` for its pairs (still counted);
//! a batch without any positive pair or without any negative pair gives 0 with a zero gradient
//! (PML). PML adds `1e-38`-scale `small_val` inside its log; the softplus form here needs no
//! such guard.
//!
//! Default `τ = 0.07`: PML `NTXentLoss()` default, used unchanged by the contextual paper's
//! `ntxent` baseline (spec §7).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    bool_mask, check_param, cosine_matrix, label_masks, masked_logsumexp, softplus_stable,
    validate_batch, zero_loss,
};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`NtXentLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NtXentConfig {
    /// Softmax temperature τ (PML default 0.07).
    pub temperature: f64,
}

impl Default for NtXentConfig {
    fn default() -> Self {
        Self { temperature: 0.07 }
    }
}

impl NtXentConfig {
    /// Builds the loss. Errors unless τ > 0.
    pub fn init(&self) -> Result<NtXentLoss, LossError> {
        check_param(
            "ntxent",
            "temperature",
            self.temperature,
            |v| v > 0.0,
            "> 0",
        )?;
        Ok(NtXentLoss {
            temperature: self.temperature,
        })
    }
}

/// NT-Xent loss; see the module documentation.
#[derive(Module, Debug)]
pub struct NtXentLoss {
    temperature: f64,
}

impl ClassLoss for NtXentLoss {
    fn name(&self) -> &'static str {
        "ntxent"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("ntxent", &embeddings, labels)?;
        let (pos, neg) = label_masks(labels);
        let num_pos = pos.iter().filter(|&&b| b).count();
        if num_pos == 0 || !neg.iter().any(|&b| b) {
            let total = zero_loss(embeddings);
            return Ok(LossOutput {
                terms: vec![("ntxent", total.clone())],
                total,
            });
        }
        let device = embeddings.device();
        let logits = cosine_matrix(embeddings).div_scalar(self.temperature);
        let neg_lse = masked_logsumexp(logits.clone(), bool_mask(neg, [n, n], &device), false);
        let per_pair = softplus_stable(neg_lse - logits);
        let pos_mask = bool_mask(pos, [n, n], &device).bool_not();
        let total = per_pair
            .mask_fill(pos_mask, 0.0)
            .sum()
            .div_scalar(num_pos as f64);
        Ok(LossOutput {
            terms: vec![("ntxent", total.clone())],
            total,
        })
    }
}
