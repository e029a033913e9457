//! ProxyNCA (Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, "No Fuss Distance Metric Learning
//! using Proxies", ICCV 2017) with pytorch-metric-learning's `ProxyNCALoss` semantics.
//!
//! One trainable proxy `w_c` per class. With `z_i` and `ŵ_c` the L2-normalised embedding and
//! proxy, `D_ic = ‖z_i − ŵ_c‖²` (PML's `LpDistance(power=2)`) and softmax scale `s`:
//!
//! `ℓ_i = −log( e^{−s·D_{i,y_i}} / Σ_c e^{−s·D_ic} )`,   `L = (1/n) Σ_i ℓ_i`
//!
//! (the normaliser runs over all proxies, the target included, as in PML's NCA computation).
//! PML drops rows whose softmax probability underflowed to exactly 0; the log-softmax form
//! here does not underflow, so every row counts.
//!
//! Defaults and sources:
//! - `softmax_scale = 10`: the contextual paper's P256 `proxynca` setting
//!   (`ProxyNCALoss(C, 512, softmax_scale=10)`, spec §7; its P224 setting is 9).
//! - proxies initialised `N(0, 1)` (PML's default `torch.nn.init.normal_`), seeded by `seed`.
//! - `proxy_lr_multiplier = 100` (P224 setting; see [`super::registry::LossConfig::proxy_lr_multiplier`]).
//!
//! Labels must be class indices `0..num_classes` (the paper remaps them to `0..C−1`).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    check_param, init_proxies, l2_normalize, one_hot_mask, validate_proxy_batch,
    DEFAULT_PROXY_LR_MULTIPLIER,
};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`ProxyNcaLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyNcaConfig {
    /// Softmax scale `s` (default 10, the paper's P256 setting).
    pub softmax_scale: f64,
    /// Seed of the proxy initialisation.
    pub seed: u64,
    /// Proxy learning rate relative to the model's (default 100).
    pub proxy_lr_multiplier: f64,
}

impl Default for ProxyNcaConfig {
    fn default() -> Self {
        Self {
            softmax_scale: 10.0,
            seed: 0,
            proxy_lr_multiplier: DEFAULT_PROXY_LR_MULTIPLIER,
        }
    }
}

impl ProxyNcaConfig {
    /// Builds the loss with `num_classes × dim` proxies on `device`. Errors unless the scale is
    /// > 0, the multiplier ≥ 0, and `num_classes`, `dim` ≥ 1.
    pub fn init(
        &self,
        num_classes: usize,
        dim: usize,
        device: &Device,
    ) -> Result<ProxyNcaLoss, LossError> {
        check_param(
            "proxy_nca",
            "softmax_scale",
            self.softmax_scale,
            |v| v > 0.0,
            "> 0",
        )?;
        check_param(
            "proxy_nca",
            "proxy_lr_multiplier",
            self.proxy_lr_multiplier,
            |v| v >= 0.0,
            "≥ 0",
        )?;
        Ok(ProxyNcaLoss {
            proxies: init_proxies("proxy_nca", num_classes, dim, 1.0, self.seed, device)?,
            softmax_scale: self.softmax_scale,
        })
    }
}

/// ProxyNCA loss; the proxies are its trainable parameters.
#[derive(Module, Debug)]
pub struct ProxyNcaLoss {
    /// `num_classes × dim` proxies (un-normalised; normalised in the forward pass).
    pub proxies: Param<Tensor<2>>,
    softmax_scale: f64,
}

impl ClassLoss for ProxyNcaLoss {
    fn name(&self) -> &'static str {
        "proxy_nca"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let proxies = self.proxies.val();
        validate_proxy_batch("proxy_nca", &embeddings, labels, &proxies)?;
        let [num_classes, _] = proxies.dims();
        let device = embeddings.device();
        let z = l2_normalize(embeddings);
        let w = l2_normalize(proxies);
        let sq_dist = z
            .matmul(w.transpose())
            .mul_scalar(-2.0)
            .add_scalar(2.0)
            .clamp_min(0.0);
        let log_p = log_softmax(sq_dist.mul_scalar(-self.softmax_scale), 1);
        let target = one_hot_mask(labels, num_classes, &device).bool_not();
        let total = log_p
            .mask_fill(target, 0.0)
            .sum()
            .div_scalar(-(labels.len() as f64));
        Ok(LossOutput {
            terms: vec![("proxy_nca", total.clone())],
            total,
        })
    }
}
