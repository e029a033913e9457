//! Config-selectable losses on batches with continuous labels, and their shared input checks.
//!
//! [`ContinuousLossConfig`] is a serde enum tagged by `name`, e.g. in TOML
//!
//! ```toml
//! [loss]
//! name = "log_ratio"        # or "dense_triplet", "binary_triplet"
//! distance = "squared"      # any field of that loss's config; missing ones take defaults
//! ```
//!
//! and [`ContinuousLossConfig::init`] builds the matching [`AnyContinuousLoss`].

use std::cmp::Ordering;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distances::first_non_finite_row;
use crate::losses::binary_triplet::{BinaryTripletConfig, BinaryTripletLoss};
use crate::losses::dense_triplet::{DenseTripletConfig, DenseTripletLoss};
use crate::losses::log_ratio::{LogRatioConfig, LogRatioLoss};
use crate::losses::{ContinuousLoss, LossError, LossOutput};

/// Which continuous-label loss to train with, and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum ContinuousLossConfig {
    /// The log-ratio loss (Kim et al., CVPR 2019).
    LogRatio(LogRatioConfig),
    /// Triplet loss on dense-mining batches ("Tri + Dense").
    DenseTriplet(DenseTripletConfig),
    /// Triplet loss with kNN-binarised labels ("Tri + Binary").
    BinaryTriplet(BinaryTripletConfig),
}

impl Default for ContinuousLossConfig {
    /// The log-ratio loss with its code-faithful defaults, the method of Kim et al.
    fn default() -> Self {
        Self::LogRatio(LogRatioConfig::default())
    }
}

impl ContinuousLossConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<AnyContinuousLoss, LossError> {
        Ok(match self {
            Self::LogRatio(c) => AnyContinuousLoss::LogRatio(c.init()?),
            Self::DenseTriplet(c) => AnyContinuousLoss::DenseTriplet(c.init()?),
            Self::BinaryTriplet(c) => AnyContinuousLoss::BinaryTriplet(c.init()?),
        })
    }
}

/// One of the continuous-label losses, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyContinuousLoss {
    /// See [`LogRatioLoss`].
    LogRatio(LogRatioLoss),
    /// See [`DenseTripletLoss`].
    DenseTriplet(DenseTripletLoss),
    /// See [`BinaryTripletLoss`].
    BinaryTriplet(BinaryTripletLoss),
}

impl ContinuousLoss for AnyContinuousLoss {
    fn name(&self) -> &'static str {
        match self {
            Self::LogRatio(l) => l.name(),
            Self::DenseTriplet(l) => l.name(),
            Self::BinaryTriplet(l) => l.name(),
        }
    }

    fn forward(&self, embeddings: Tensor<2>, label_dist: &[f32]) -> Result<LossOutput, LossError> {
        match self {
            Self::LogRatio(l) => l.forward(embeddings, label_dist),
            Self::DenseTriplet(l) => l.forward(embeddings, label_dist),
            Self::BinaryTriplet(l) => l.forward(embeddings, label_dist),
        }
    }
}

/// Validates a continuous-label batch and returns `(B, d)`: `embeddings` is `B × d` with
/// `B ≥ min_rows`, `d ≥ 1` and finite entries; `label_dist` has `B²` entries, and those of
/// the first `rows_used` rows (the anchor rows of the loss) are finite and ≥ 0. `loss` names
/// the caller in the error message.
pub fn check_continuous_batch(
    loss: &str,
    embeddings: &Tensor<2>,
    label_dist: &[f32],
    min_rows: usize,
    rows_used: usize,
) -> Result<(usize, usize), LossError> {
    let [b, d] = embeddings.dims();
    if b < min_rows || d == 0 {
        return Err(LossError::Invalid(format!(
            "{loss}: embeddings are {b} × {d}; need at least {min_rows} rows (an anchor and \
             two others) and one column"
        )));
    }
    if label_dist.len() != b * b {
        return Err(LossError::Invalid(format!(
            "{loss}: label_dist has {} entries but a batch of {b} needs {b}×{b} = {}",
            label_dist.len(),
            b * b
        )));
    }
    for (at, &g) in label_dist.iter().enumerate().take(rows_used.min(b) * b) {
        if !(g.is_finite() && g >= 0.0) {
            return Err(LossError::Invalid(format!(
                "{loss}: label_dist[{}][{}] = {g} must be finite and ≥ 0",
                at / b,
                at % b
            )));
        }
    }
    if let Some(row) = first_non_finite_row(embeddings) {
        return Err(LossError::Invalid(format!(
            "{loss}: embeddings row {row} contains NaN or infinity"
        )));
    }
    Ok((b, d))
}

/// Sorts batch members by ascending label distance `key`, ties kept in index (input) order.
pub fn sort_members_by_label(mut members: Vec<usize>, key: impl Fn(usize) -> f64) -> Vec<usize> {
    // Keys are validated finite, so partial_cmp never fails; stable sort keeps index order.
    members.sort_by(|&i, &j| key(i).partial_cmp(&key(j)).unwrap_or(Ordering::Equal));
    members
}
