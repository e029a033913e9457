//! Metric-learning losses, one per file. Each file's doc comment states the equation, the
//! paper and every default with its source.
//!
//! Two families share the output type [`LossOutput`]:
//! - [`ClassLoss`]: embeddings of a batch plus integer class labels (contextual hybrid,
//!   contrastive, triplet, multi-similarity, …).
//! - [`ContinuousLoss`]: embeddings of a batch plus the batch's label-distance matrix
//!   (log-ratio, dense triplet, binary triplet).

pub(crate) mod baseline_util;
pub mod binary_triplet;
pub mod contextual;
mod contextual_fused;
pub mod continuous;
pub mod contrastive;
pub mod dense_triplet;
pub mod fastap;
pub mod log_ratio;
pub mod multi_similarity;
pub mod normalized_softmax;
pub mod ntxent;
pub mod proxy_anchor;
pub mod proxy_nca;
pub mod registry;
pub mod smooth_ap;
pub mod supcon;
pub mod triplet;

use burn::prelude::*;

/// A scalar loss and its named terms (unweighted), for logging and NaN diagnostics.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar (shape `[1]`) that is back-propagated.
    pub total: Tensor<1>,
    /// Named terms, e.g. `("contextual", …)`, `("contrastive", …)`, `("regulariser", …)`.
    pub terms: Vec<(&'static str, Tensor<1>)>,
}

/// Bad loss input: one line naming the parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A parameter or input that the loss cannot work with.
    #[error("{0}")]
    Invalid(String),
    /// An evaluation form the loss does not have (names the setting that asked for it).
    #[error("{0}")]
    Unsupported(String),
}

/// A loss on class-labelled batches.
pub trait ClassLoss {
    /// Short name used in configs and logs (`"contextual"`, `"contrastive"`, …).
    fn name(&self) -> &'static str;
    /// Loss of a batch: `embeddings` is `n × d` (raw model output: losses that work on the
    /// unit sphere normalise it themselves), `labels` has `n` entries.
    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError>;
    /// The loss of the anchors `rows` of a batch against the whole batch as references
    /// (PyTorch Metric Learning's `DistributedLossWrapper(efficient=True)`: one device's
    /// anchors against the gathered batch, `train.gather = "local"`). `embeddings` and `labels`
    /// are the whole batch; pairs and mined pairs are the whole batch's, restricted to anchor
    /// rows `rows`. Only losses whose terms are sums over anchor rows have it (contrastive,
    /// multi-similarity); the others' terms couple every pair of the batch (the contextual
    /// hybrid's neighbourhoods, the ranking losses) and return an error naming the loss.
    fn forward_anchors(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError> {
        let _ = (embeddings, labels, rows);
        Err(LossError::Unsupported(format!(
            "{}: train.gather = \"local\" needs a loss that sums over anchor rows \
             (contrastive, multi_similarity); use train.gather = \"exact\"",
            self.name()
        )))
    }
}

/// Checks the anchor rows of [`ClassLoss::forward_anchors`] against a batch of `n` rows.
pub(crate) fn check_anchor_rows(
    loss: &str,
    rows: &std::ops::Range<usize>,
    n: usize,
) -> Result<(), LossError> {
    if rows.start >= rows.end || rows.end > n {
        return Err(LossError::Invalid(format!(
            "{loss}: anchor rows {}..{} are not a non-empty range of the batch of {n} rows",
            rows.start, rows.end
        )));
    }
    Ok(())
}

/// A loss on batches with continuous labels.
pub trait ContinuousLoss {
    /// Short name used in configs and logs (`"log_ratio"`, …).
    fn name(&self) -> &'static str;
    /// Loss of a batch: `embeddings` is `B × d`; `label_dist` is the row-major `B × B`
    /// matrix of label distances between batch members. Row 0 is the anchor for the
    /// single-anchor losses of Kim et al. (2019).
    fn forward(&self, embeddings: Tensor<2>, label_dist: &[f32]) -> Result<LossOutput, LossError>;
}
