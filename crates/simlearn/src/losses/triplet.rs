//! Triplet margin loss (Weinberger & Saul 2009; Schroff et al., FaceNet, 2015) with
//! pytorch-metric-learning's `TripletMarginLoss` semantics.
//!
//! With `z` the L2-normalised embeddings and `D_ij = ‖z_i − z_j‖₂` (PML's default `LpDistance`,
//! p = 2, power 1, normalised embeddings), each triplet `(a, p, n)` contributes
//!
//! `ℓ(a, p, n) = max(0, D_ap − D_an + margin)`
//!
//! and the loss is the mean over the triplets with `ℓ > 0` (PML's `AvgNonZeroReducer`); 0, with a
//! zero gradient, when no triplet violates the margin or no triplet exists (e.g. a batch without
//! a positive pair).
//!
//! Triplets come from the configured miner ([`crate::miners`]): `all` (every valid triplet of the
//! batch), `batch_hard`, `distance_weighted` or `multi_similarity` (pairs combined into triplets
//! sharing the anchor).
//!
//! Defaults and sources:
//! - `margin = 0.05`: the contextual paper's `triplet` baseline (`TripletMarginLoss(margin=0.05)`,
//!   spec §7; also PML 2.x's default).
//! - `miner = distance_weighted` with `cutoff = 0.5`, `nonzero_loss_cutoff = 1.4`: the paper pairs
//!   the triplet baseline with PML `DistanceWeightedMiner()` (spec §7).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    check_param, distance_matrix_normalized, host_batch, index_vector, validate_batch, zero_loss,
};
use super::{ClassLoss, LossError, LossOutput};
use crate::miners::{AllTuples, AnyMiner, Miner, MinerConfig};

/// Configuration of [`TripletLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TripletConfig {
    /// Margin between anchor–positive and anchor–negative distances (default 0.05, spec §7).
    pub margin: f64,
    /// Triplet miner (default `distance_weighted`, spec §7).
    pub miner: MinerConfig,
}

impl Default for TripletConfig {
    fn default() -> Self {
        Self {
            margin: 0.05,
            miner: MinerConfig::DistanceWeighted(Default::default()),
        }
    }
}

impl TripletConfig {
    /// Builds the loss. Errors on a non-finite margin or bad miner parameters.
    pub fn init(&self) -> Result<TripletLoss, LossError> {
        check_param("triplet", "margin", self.margin, |_| true, "finite")?;
        Ok(TripletLoss {
            margin: self.margin,
            miner: self.miner.init()?,
        })
    }
}

/// Triplet margin loss; see the module documentation.
#[derive(Module, Debug)]
pub struct TripletLoss {
    margin: f64,
    #[module(skip)]
    miner: AnyMiner,
}

impl TripletLoss {
    /// Loss over explicitly given triplets `(a, p, n)` (row indices), bypassing the miner.
    pub fn forward_triplets(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        triplets: &[(usize, usize, usize)],
    ) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("triplet", &embeddings, labels)?;
        self.compute(embeddings, n, triplets)
    }

    fn compute(
        &self,
        embeddings: Tensor<2>,
        n: usize,
        triplets: &[(usize, usize, usize)],
    ) -> Result<LossOutput, LossError> {
        for &(a, p, m) in triplets {
            if a >= n || p >= n || m >= n {
                return Err(LossError::Invalid(format!(
                    "triplet: triplet ({a}, {p}, {m}) indexes outside the batch of {n} rows"
                )));
            }
        }
        if triplets.is_empty() {
            let total = zero_loss(embeddings);
            return Ok(LossOutput {
                terms: vec![("triplet", total.clone())],
                total,
            });
        }
        let device = embeddings.device();
        let dist = distance_matrix_normalized(embeddings).reshape([n * n]);
        let ap = index_vector(
            triplets
                .iter()
                .map(|&(a, p, _)| (a * n + p) as i64)
                .collect(),
            &device,
        );
        let an = index_vector(
            triplets
                .iter()
                .map(|&(a, _, m)| (a * n + m) as i64)
                .collect(),
            &device,
        );
        let violation = (dist.clone().select(0, ap) - dist.select(0, an))
            .add_scalar(self.margin)
            .clamp_min(0.0);
        // The count of active triplets is a constant of the step (no gradient), as in PML.
        let active = violation
            .clone()
            .greater_elem(0.0)
            .int()
            .sum()
            .into_scalar::<i64>()
            .max(1);
        let total = violation.sum().div_scalar(active as f64);
        Ok(LossOutput {
            terms: vec![("triplet", total.clone())],
            total,
        })
    }

    /// The configured miner.
    pub fn miner(&self) -> &AnyMiner {
        &self.miner
    }
}

impl ClassLoss for TripletLoss {
    fn name(&self) -> &'static str {
        "triplet"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("triplet", &embeddings, labels)?;
        let triplets = if self.miner.is_all() {
            // No embedding values needed: skip the device-to-host copy.
            AllTuples::pairs(labels).to_triplets()
        } else {
            let batch = host_batch("triplet", &embeddings)?;
            self.miner.mine(&batch, labels)?.to_triplets()
        };
        self.compute(embeddings, n, &triplets)
    }
}
