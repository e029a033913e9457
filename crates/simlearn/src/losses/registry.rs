//! The class-loss registry: [`LossConfig`], a serde enum tagged by `name` over every
//! [`ClassLoss`] of the crate, and [`AnyClassLoss`], the built loss as a burn [`Module`] (the
//! proxy losses' proxies are its trainable parameters).
//!
//! Every variant's fields default, so a TOML section needs only the name:
//!
//! ```toml
//! [loss]
//! name = "multi_similarity"
//! ```
//!
//! or overrides some fields:
//!
//! ```toml
//! [loss]
//! name = "triplet"
//! margin = 0.1
//! miner = "batch_hard"
//! ```
//!
//! Names (aliases in parentheses, the spellings of the contextual paper's `--loss` flags):
//! `contextual`, `contrastive`, `triplet`, `multi_similarity` (`multisimilarity`, `ms`),
//! `ntxent`, `supcon`, `smooth_ap` (`smoothap`), `fastap` (`fast_ap`), `proxy_nca`
//! (`proxynca`), `proxy_anchor`, `normalized_softmax` (`normsoftmax`). Unknown fields are
//! rejected.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::contextual::{ContextualConfig, ContextualLoss};
use super::contrastive::{ContrastiveConfig, ContrastiveLoss};
use super::fastap::{FastApConfig, FastApLoss};
use super::multi_similarity::{MultiSimilarityConfig, MultiSimilarityLoss};
use super::normalized_softmax::{NormalizedSoftmaxConfig, NormalizedSoftmaxLoss};
use super::ntxent::{NtXentConfig, NtXentLoss};
use super::proxy_anchor::{ProxyAnchorConfig, ProxyAnchorLoss};
use super::proxy_nca::{ProxyNcaConfig, ProxyNcaLoss};
use super::smooth_ap::{SmoothApConfig, SmoothApLoss};
use super::supcon::{SupConConfig, SupConLoss};
use super::triplet::{TripletConfig, TripletLoss};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of any class loss, tagged by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum LossConfig {
    /// Contextual-similarity hybrid loss (Liao et al. 2023).
    Contextual(ContextualConfig),
    /// Margin contrastive loss on cosine similarity.
    Contrastive(ContrastiveConfig),
    /// Triplet margin loss with a miner.
    Triplet(TripletConfig),
    /// Multi-similarity loss.
    #[serde(alias = "multisimilarity", alias = "ms")]
    MultiSimilarity(MultiSimilarityConfig),
    /// NT-Xent / InfoNCE.
    #[serde(rename = "ntxent")]
    NtXent(NtXentConfig),
    /// Supervised contrastive loss.
    #[serde(rename = "supcon")]
    SupCon(SupConConfig),
    /// Smooth-AP.
    #[serde(alias = "smoothap")]
    SmoothAp(SmoothApConfig),
    /// FastAP.
    #[serde(rename = "fastap", alias = "fast_ap")]
    FastAp(FastApConfig),
    /// ProxyNCA (trainable proxies).
    #[serde(alias = "proxynca")]
    ProxyNca(ProxyNcaConfig),
    /// Proxy-Anchor (trainable proxies).
    ProxyAnchor(ProxyAnchorConfig),
    /// Normalized softmax (trainable class weights).
    #[serde(alias = "normsoftmax")]
    NormalizedSoftmax(NormalizedSoftmaxConfig),
}

impl Default for LossConfig {
    /// The contextual hybrid loss with its defaults (the project's method).
    fn default() -> Self {
        LossConfig::Contextual(ContextualConfig::default())
    }
}

impl LossConfig {
    /// The config name of the loss (`"triplet"`, …), as written in a TOML `name` field.
    pub fn name(&self) -> &'static str {
        match self {
            LossConfig::Contextual(_) => "contextual",
            LossConfig::Contrastive(_) => "contrastive",
            LossConfig::Triplet(_) => "triplet",
            LossConfig::MultiSimilarity(_) => "multi_similarity",
            LossConfig::NtXent(_) => "ntxent",
            LossConfig::SupCon(_) => "supcon",
            LossConfig::SmoothAp(_) => "smooth_ap",
            LossConfig::FastAp(_) => "fastap",
            LossConfig::ProxyNca(_) => "proxy_nca",
            LossConfig::ProxyAnchor(_) => "proxy_anchor",
            LossConfig::NormalizedSoftmax(_) => "normalized_softmax",
        }
    }

    /// Builds the loss. `num_classes` (number of training classes; labels must then be
    /// `0..num_classes`) and `dim` (embedding width) size the proxies of the proxy losses and
    /// are ignored by the others; proxies are created on `device` (use the autodiff device the
    /// model trains on). Errors name the loss and the bad parameter.
    pub fn init(
        &self,
        num_classes: usize,
        dim: usize,
        device: &Device,
    ) -> Result<AnyClassLoss, LossError> {
        Ok(match self {
            LossConfig::Contextual(c) => {
                AnyClassLoss::Contextual(ContextualModule { inner: c.init()? })
            }
            LossConfig::Contrastive(c) => {
                AnyClassLoss::Contrastive(ContrastiveModule { inner: c.init()? })
            }
            LossConfig::Triplet(c) => AnyClassLoss::Triplet(c.init()?),
            LossConfig::MultiSimilarity(c) => AnyClassLoss::MultiSimilarity(c.init()?),
            LossConfig::NtXent(c) => AnyClassLoss::NtXent(c.init()?),
            LossConfig::SupCon(c) => AnyClassLoss::SupCon(c.init()?),
            LossConfig::SmoothAp(c) => AnyClassLoss::SmoothAp(c.init()?),
            LossConfig::FastAp(c) => AnyClassLoss::FastAp(c.init()?),
            LossConfig::ProxyNca(c) => AnyClassLoss::ProxyNca(c.init(num_classes, dim, device)?),
            LossConfig::ProxyAnchor(c) => {
                AnyClassLoss::ProxyAnchor(c.init(num_classes, dim, device)?)
            }
            LossConfig::NormalizedSoftmax(c) => {
                AnyClassLoss::NormalizedSoftmax(c.init(num_classes, dim, device)?)
            }
        })
    }

    /// Whether the built loss has trainable parameters (the proxy losses).
    pub fn has_parameters(&self) -> bool {
        self.proxy_lr_multiplier().is_some()
    }

    /// Learning rate of the loss's parameters relative to the model's, `None` for losses without
    /// parameters. Default 100 for ProxyNCA, Proxy-Anchor and normalized softmax: the contextual
    /// paper's P224 recipe and the Proxy-Anchor reference (spec §7). The paper's P256 recipe
    /// instead gives ProxyNCA / NormSoftmax proxies a separate Adam at lr 1e-3 (wd 1e-4); set the
    /// config's `proxy_lr_multiplier` to `1e-3 / lr` to reproduce its learning rate.
    pub fn proxy_lr_multiplier(&self) -> Option<f64> {
        match self {
            LossConfig::ProxyNca(c) => Some(c.proxy_lr_multiplier),
            LossConfig::ProxyAnchor(c) => Some(c.proxy_lr_multiplier),
            LossConfig::NormalizedSoftmax(c) => Some(c.proxy_lr_multiplier),
            _ => None,
        }
    }
}

/// [`ContextualLoss`] as a (parameter-free) burn module.
#[derive(Module, Debug)]
pub struct ContextualModule {
    #[module(skip)]
    inner: ContextualLoss,
}

/// [`ContrastiveLoss`] as a (parameter-free) burn module.
#[derive(Module, Debug)]
pub struct ContrastiveModule {
    #[module(skip)]
    inner: ContrastiveLoss,
}

/// Any built class loss. A burn [`Module`]: the proxy losses' proxies are its parameters (visit
/// them with the usual module machinery, e.g. an optimiser over `AnyClassLoss`); the other
/// variants have none.
#[derive(Module, Debug)]
pub enum AnyClassLoss {
    /// See [`ContextualLoss`].
    Contextual(ContextualModule),
    /// See [`ContrastiveLoss`].
    Contrastive(ContrastiveModule),
    /// See [`TripletLoss`].
    Triplet(TripletLoss),
    /// See [`MultiSimilarityLoss`].
    MultiSimilarity(MultiSimilarityLoss),
    /// See [`NtXentLoss`].
    NtXent(NtXentLoss),
    /// See [`SupConLoss`].
    SupCon(SupConLoss),
    /// See [`SmoothApLoss`].
    SmoothAp(SmoothApLoss),
    /// See [`FastApLoss`].
    FastAp(FastApLoss),
    /// See [`ProxyNcaLoss`].
    ProxyNca(ProxyNcaLoss),
    /// See [`ProxyAnchorLoss`].
    ProxyAnchor(ProxyAnchorLoss),
    /// See [`NormalizedSoftmaxLoss`].
    NormalizedSoftmax(NormalizedSoftmaxLoss),
}

impl AnyClassLoss {
    /// Whether the loss has trainable parameters (proxies).
    pub fn has_parameters(&self) -> bool {
        matches!(
            self,
            AnyClassLoss::ProxyNca(_)
                | AnyClassLoss::ProxyAnchor(_)
                | AnyClassLoss::NormalizedSoftmax(_)
        )
    }

    /// The proxy (class-weight) matrix of a proxy loss, `num_classes × dim`.
    pub fn proxies(&self) -> Option<Tensor<2>> {
        match self {
            AnyClassLoss::ProxyNca(l) => Some(l.proxies.val()),
            AnyClassLoss::ProxyAnchor(l) => Some(l.proxies.val()),
            AnyClassLoss::NormalizedSoftmax(l) => Some(l.proxies.val()),
            _ => None,
        }
    }

    fn as_class_loss(&self) -> &dyn ClassLoss {
        match self {
            AnyClassLoss::Contextual(l) => &l.inner,
            AnyClassLoss::Contrastive(l) => &l.inner,
            AnyClassLoss::Triplet(l) => l,
            AnyClassLoss::MultiSimilarity(l) => l,
            AnyClassLoss::NtXent(l) => l,
            AnyClassLoss::SupCon(l) => l,
            AnyClassLoss::SmoothAp(l) => l,
            AnyClassLoss::FastAp(l) => l,
            AnyClassLoss::ProxyNca(l) => l,
            AnyClassLoss::ProxyAnchor(l) => l,
            AnyClassLoss::NormalizedSoftmax(l) => l,
        }
    }
}

impl ClassLoss for AnyClassLoss {
    fn name(&self) -> &'static str {
        self.as_class_loss().name()
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        self.as_class_loss().forward(embeddings, labels)
    }

    fn forward_anchors(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError> {
        self.as_class_loss()
            .forward_anchors(embeddings, labels, rows)
    }
}
