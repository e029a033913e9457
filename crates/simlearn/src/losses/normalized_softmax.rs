//! Normalized softmax / NormFace (Zhai & Wu, "Classification is a Strong Baseline for Deep
//! Metric Learning", BMVC 2019; Wang et al., NormFace, 2017) with pytorch-metric-learning's
//! `NormalizedSoftmaxLoss` semantics.
//!
//! One trainable class weight `w_c` per class. With `z_i` and `ŵ_c` L2-normalised and
//! temperature `T`, cross-entropy on cosine logits:
//!
//! `ℓ_i = −log( e^{⟨z_i, ŵ_{y_i}⟩/T} / Σ_c e^{⟨z_i, ŵ_c⟩/T} )`,   `L = (1/n) Σ_i ℓ_i`
//!
//! Defaults and sources:
//! - `temperature = 0.05`: the contextual paper's `normsoftmax` setting
//!   (`NormalizedSoftmaxLoss(C, d, temperature=0.05)`, spec §7; PML's default too), as in Zhai & Wu.
//! - weights initialised `N(0, 1)` (PML's default `torch.nn.init.normal_`), seeded by `seed`.
//! - `proxy_lr_multiplier = 100` (P224 setting, spec §7).
//!
//! Labels must be class indices `0..num_classes`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    check_param, init_proxies, l2_normalize, one_hot_mask, validate_proxy_batch,
    DEFAULT_PROXY_LR_MULTIPLIER,
};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`NormalizedSoftmaxLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizedSoftmaxConfig {
    /// Softmax temperature `T` (default 0.05).
    pub temperature: f64,
    /// Seed of the weight initialisation.
    pub seed: u64,
    /// Class-weight learning rate relative to the model's (default 100).
    pub proxy_lr_multiplier: f64,
}

impl Default for NormalizedSoftmaxConfig {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            seed: 0,
            proxy_lr_multiplier: DEFAULT_PROXY_LR_MULTIPLIER,
        }
    }
}

impl NormalizedSoftmaxConfig {
    /// Builds the loss with `num_classes × dim` class weights on `device`. Errors unless
    /// `T > 0`, the multiplier ≥ 0, and `num_classes`, `dim` ≥ 1.
    pub fn init(
        &self,
        num_classes: usize,
        dim: usize,
        device: &Device,
    ) -> Result<NormalizedSoftmaxLoss, LossError> {
        check_param(
            "normalized_softmax",
            "temperature",
            self.temperature,
            |v| v > 0.0,
            "> 0",
        )?;
        check_param(
            "normalized_softmax",
            "proxy_lr_multiplier",
            self.proxy_lr_multiplier,
            |v| v >= 0.0,
            "≥ 0",
        )?;
        Ok(NormalizedSoftmaxLoss {
            proxies: init_proxies(
                "normalized_softmax",
                num_classes,
                dim,
                1.0,
                self.seed,
                device,
            )?,
            temperature: self.temperature,
        })
    }
}

/// Normalized-softmax loss; the class weights are its trainable parameters.
#[derive(Module, Debug)]
pub struct NormalizedSoftmaxLoss {
    /// `num_classes × dim` class weights (normalised in the forward pass).
    pub proxies: Param<Tensor<2>>,
    temperature: f64,
}

impl ClassLoss for NormalizedSoftmaxLoss {
    fn name(&self) -> &'static str {
        "normalized_softmax"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let proxies = self.proxies.val();
        validate_proxy_batch("normalized_softmax", &embeddings, labels, &proxies)?;
        let [num_classes, _] = proxies.dims();
        let device = embeddings.device();
        let z = l2_normalize(embeddings);
        let w = l2_normalize(proxies);
        let log_p = log_softmax(z.matmul(w.transpose()).div_scalar(self.temperature), 1);
        let target = one_hot_mask(labels, num_classes, &device).bool_not();
        let total = log_p
            .mask_fill(target, 0.0)
            .sum()
            .div_scalar(-(labels.len() as f64));
        Ok(LossOutput {
            terms: vec![("normalized_softmax", total.clone())],
            total,
        })
    }
}
