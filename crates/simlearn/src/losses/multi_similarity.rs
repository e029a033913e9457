//! Multi-similarity loss (Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General
//! Pair Weighting for Deep Metric Learning", CVPR 2019) with pytorch-metric-learning's
//! `MultiSimilarityLoss` semantics.
//!
//! With `S_ij` the cosine similarity of the L2-normalised embeddings, `P_i` the anchor's
//! positive pairs and `N_i` its negative pairs (all pairs of the batch, or the mined ones):
//!
//! `L = (1/n) Σ_i [ (1/α)·log(1 + Σ_{p∈P_i} e^{−α(S_ip − λ)}) + (1/β)·log(1 + Σ_{k∈N_i} e^{β(S_ik − λ)}) ]`
//!
//! The mean runs over all `n` rows (PML's `MeanReducer`): a row without pairs contributes 0. A
//! batch without any pair (e.g. a single row) gives 0 with a zero gradient.
//!
//! Defaults and sources (PML `MultiSimilarityLoss()` defaults, used unchanged by the contextual
//! paper's `multisimilarity` / `MS` baselines, spec §7): `α = 2`, `β = 50`, base `λ = 0.5`;
//! `miner = all` (the P256 `multisimilarity` baseline uses no miner; the P224 `MS+miner`
//! baseline uses `miner = "multi_similarity"` with ε = 0.1).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    bool_mask, check_param, cosine_matrix, host_batch, l2_normalize, label_masks, masked_logsumexp,
    validate_batch,
};
use super::{ClassLoss, LossError, LossOutput};
use crate::miners::{AnyMiner, Miner, MinerConfig};

/// Configuration of [`MultiSimilarityLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiSimilarityConfig {
    /// Positive-pair scale α (PML default 2).
    pub alpha: f64,
    /// Negative-pair scale β (PML default 50).
    pub beta: f64,
    /// Similarity base λ (PML default 0.5).
    pub base: f64,
    /// Pair miner (default `all`: no mining).
    pub miner: MinerConfig,
}

impl Default for MultiSimilarityConfig {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            beta: 50.0,
            base: 0.5,
            miner: MinerConfig::All,
        }
    }
}

impl MultiSimilarityConfig {
    /// Builds the loss. Errors unless α > 0, β > 0 and λ is finite.
    pub fn init(&self) -> Result<MultiSimilarityLoss, LossError> {
        check_param("multi_similarity", "alpha", self.alpha, |v| v > 0.0, "> 0")?;
        check_param("multi_similarity", "beta", self.beta, |v| v > 0.0, "> 0")?;
        check_param("multi_similarity", "base", self.base, |_| true, "finite")?;
        Ok(MultiSimilarityLoss {
            alpha: self.alpha,
            beta: self.beta,
            base: self.base,
            miner: self.miner.init()?,
        })
    }
}

/// Multi-similarity loss; see the module documentation.
#[derive(Module, Debug)]
pub struct MultiSimilarityLoss {
    alpha: f64,
    beta: f64,
    base: f64,
    #[module(skip)]
    miner: AnyMiner,
}

impl MultiSimilarityLoss {
    /// Loss over explicitly given positive and negative pairs `(anchor, other)`.
    pub fn forward_pairs(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        positives: &[(usize, usize)],
        negatives: &[(usize, usize)],
    ) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("multi_similarity", &embeddings, labels)?;
        let mut pos = vec![false; n * n];
        let mut neg = vec![false; n * n];
        for (pairs, mask, kind) in [
            (positives, &mut pos, "positive"),
            (negatives, &mut neg, "negative"),
        ] {
            for &(a, b) in pairs {
                if a >= n || b >= n {
                    return Err(LossError::Invalid(format!(
                        "multi_similarity: {kind} pair ({a}, {b}) indexes outside the batch of {n} rows"
                    )));
                }
                mask[a * n + b] = true;
            }
        }
        Ok(self.compute(embeddings, pos, neg))
    }

    fn compute(&self, embeddings: Tensor<2>, pos: Vec<bool>, neg: Vec<bool>) -> LossOutput {
        self.compute_on(cosine_matrix(embeddings), pos, neg)
    }

    /// The loss on a cosine matrix `s` (`m × n`: anchor rows against the batch) and its
    /// row-major `m × n` positive and negative pair masks.
    fn compute_on(&self, s: Tensor<2>, pos: Vec<bool>, neg: Vec<bool>) -> LossOutput {
        let device = s.device();
        let shape: [usize; 2] = s.dims();
        let pos = bool_mask(pos, shape, &device);
        let neg = bool_mask(neg, shape, &device);
        let pos_term = masked_logsumexp(
            s.clone().sub_scalar(self.base).mul_scalar(-self.alpha),
            pos,
            true,
        )
        .div_scalar(self.alpha);
        let neg_term = masked_logsumexp(s.sub_scalar(self.base).mul_scalar(self.beta), neg, true)
            .div_scalar(self.beta);
        let pos_mean = pos_term.mean();
        let neg_mean = neg_term.mean();
        LossOutput {
            total: pos_mean.clone() + neg_mean.clone(),
            terms: vec![("positive", pos_mean), ("negative", neg_mean)],
        }
    }

    /// Row-major `n × n` positive and negative masks: every pair, or the miner's.
    fn masks(
        &self,
        embeddings: &Tensor<2>,
        labels: &[i64],
        n: usize,
    ) -> Result<(Vec<bool>, Vec<bool>), LossError> {
        if self.miner.is_all() {
            return Ok(label_masks(labels));
        }
        let batch = host_batch("multi_similarity", embeddings)?;
        let (p, q) = self.miner.mine(&batch, labels)?.to_pairs();
        let mut pos = vec![false; n * n];
        let mut neg = vec![false; n * n];
        p.into_iter().for_each(|(a, b)| pos[a * n + b] = true);
        q.into_iter().for_each(|(a, b)| neg[a * n + b] = true);
        Ok((pos, neg))
    }

    /// The configured miner.
    pub fn miner(&self) -> &AnyMiner {
        &self.miner
    }
}

impl ClassLoss for MultiSimilarityLoss {
    fn name(&self) -> &'static str {
        "multi_similarity"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("multi_similarity", &embeddings, labels)?;
        let (pos, neg) = self.masks(&embeddings, labels, n)?;
        Ok(self.compute(embeddings, pos, neg))
    }

    /// The anchor rows `rows` of the whole batch's (mined) pair masks against every column; the
    /// mean is over the anchors, so equal shards' losses average to the batch's loss.
    fn forward_anchors(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("multi_similarity", &embeddings, labels)?;
        super::check_anchor_rows("multi_similarity", &rows, n)?;
        let (pos, neg) = self.masks(&embeddings, labels, n)?;
        let z = l2_normalize(embeddings);
        let s = z.clone().slice(rows.clone()).matmul(z.transpose());
        let span = rows.start * n..rows.end * n;
        Ok(self.compute_on(s, pos[span.clone()].to_vec(), neg[span].to_vec()))
    }
}
