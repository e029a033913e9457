//! Proxy-Anchor loss (Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning",
//! CVPR 2020).
//!
//! One trainable proxy `p` per class. With `s(x, p)` the cosine similarity of embedding and
//! proxy, `X⁺_p` the batch rows of `p`'s class, `X⁻_p` the others, `P⁺` the proxies with at
//! least one positive in the batch and `P` all proxies:
//!
//! ```text
//! L = (1/|P⁺|) Σ_{p∈P⁺} log(1 + Σ_{x∈X⁺_p} e^{−α(s(x,p) − δ)})
//!   + (1/|P|)  Σ_{p∈P}  log(1 + Σ_{x∈X⁻_p} e^{ α(s(x,p) + δ)})
//! ```
//!
//! Defaults and sources: `α = 32`, `δ = 0.1` (Kim et al.; the contextual paper's P224
//! `Proxy_Anchor` baseline, spec §7; PML's defaults too); proxies initialised kaiming-normal with
//! `mode = fan_out` as in the reference, i.e. `N(0, 2/C)` for a `C × d` proxy matrix (PyTorch
//! takes `fan_out = C` for a 2-D weight); `proxy_lr_multiplier = 100` (spec §7).
//!
//! Number of proxies: exactly `num_classes`. The contextual paper's P224 code has a quirk
//! (spec §7): its `nb_classes()` returns the number of *images*, so it creates one proxy per
//! training image and divides the negative term by that number. That is not reproduced here.
//!
//! Labels must be class indices `0..num_classes`.

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    check_param, init_proxies, l2_normalize, masked_logsumexp, one_hot_mask, validate_proxy_batch,
    DEFAULT_PROXY_LR_MULTIPLIER,
};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`ProxyAnchorLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyAnchorConfig {
    /// Scale α (default 32).
    pub alpha: f64,
    /// Margin δ (default 0.1).
    pub margin: f64,
    /// Seed of the proxy initialisation.
    pub seed: u64,
    /// Proxy learning rate relative to the model's (default 100).
    pub proxy_lr_multiplier: f64,
}

impl Default for ProxyAnchorConfig {
    fn default() -> Self {
        Self {
            alpha: 32.0,
            margin: 0.1,
            seed: 0,
            proxy_lr_multiplier: DEFAULT_PROXY_LR_MULTIPLIER,
        }
    }
}

impl ProxyAnchorConfig {
    /// Builds the loss with `num_classes × dim` proxies on `device`. Errors unless α > 0, δ is
    /// finite, the multiplier ≥ 0, and `num_classes`, `dim` ≥ 1.
    pub fn init(
        &self,
        num_classes: usize,
        dim: usize,
        device: &Device,
    ) -> Result<ProxyAnchorLoss, LossError> {
        check_param("proxy_anchor", "alpha", self.alpha, |v| v > 0.0, "> 0")?;
        check_param("proxy_anchor", "margin", self.margin, |_| true, "finite")?;
        check_param(
            "proxy_anchor",
            "proxy_lr_multiplier",
            self.proxy_lr_multiplier,
            |v| v >= 0.0,
            "≥ 0",
        )?;
        let std = (2.0 / num_classes.max(1) as f64).sqrt();
        Ok(ProxyAnchorLoss {
            proxies: init_proxies("proxy_anchor", num_classes, dim, std, self.seed, device)?,
            alpha: self.alpha,
            margin: self.margin,
        })
    }
}

/// Proxy-Anchor loss; the proxies are its trainable parameters.
#[derive(Module, Debug)]
pub struct ProxyAnchorLoss {
    /// `num_classes × dim` proxies (normalised in the forward pass).
    pub proxies: Param<Tensor<2>>,
    alpha: f64,
    margin: f64,
}

impl ClassLoss for ProxyAnchorLoss {
    fn name(&self) -> &'static str {
        "proxy_anchor"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let proxies = self.proxies.val();
        validate_proxy_batch("proxy_anchor", &embeddings, labels, &proxies)?;
        let [num_classes, _] = proxies.dims();
        let device = embeddings.device();
        let mut present = vec![false; num_classes];
        labels.iter().for_each(|&l| present[l as usize] = true);
        let with_pos = present.iter().filter(|&&b| b).count();
        // C × n cosine matrix: each proxy is a row, so the reductions run along rows.
        let cos = l2_normalize(proxies).matmul(l2_normalize(embeddings).transpose());
        let pos_mask = one_hot_mask(labels, num_classes, &device).transpose();
        let neg_mask = pos_mask.clone().bool_not();
        let pos_term = masked_logsumexp(
            cos.clone().sub_scalar(self.margin).mul_scalar(-self.alpha),
            pos_mask,
            true,
        )
        .sum()
        .div_scalar(with_pos as f64);
        let neg_term = masked_logsumexp(
            cos.add_scalar(self.margin).mul_scalar(self.alpha),
            neg_mask,
            true,
        )
        .sum()
        .div_scalar(num_classes as f64);
        Ok(LossOutput {
            total: pos_term.clone() + neg_term.clone(),
            terms: vec![("positive", pos_term), ("negative", neg_term)],
        })
    }
}
