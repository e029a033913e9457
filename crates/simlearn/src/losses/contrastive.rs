//! Margin contrastive loss on cosine similarity, averaged over its non-zero terms.
//!
//! Spec `contextual-loss.md` §2.2 (the `contrastive` loss of Liao et al.'s code). Over all
//! ordered pairs `(i, j)` of the batch, diagonal included, with `S = F Fᵀ` on L2-normalised
//! embeddings and `Y_ij = 1[y_i = y_j]`:
//!
//! ```text
//! L⁺_ij = Y_ij · max(0, m⁺ − S_ij)          L⁻_ij = (1 − Y_ij) · max(0, S_ij − m⁻)
//! l⁺ = Σ L⁺ / #{L⁺_ij > 0}  (0 if none)      l⁻ = Σ L⁻ / #{L⁻_ij > 0}  (0 if none)
//! L_con = l⁺ + l⁻
//! ```
//!
//! The counts are constants for the backward pass, so
//! `∂L/∂S = −Y⊙[m⁺−S>0]/#⁺ + (1−Y)⊙[S−m⁻>0]/#⁻`. Each unordered pair counts twice, and the
//! diagonal contributes nothing while `S_ii ≈ 1 > m⁺`. Normalising by the active count acts as
//! implicit hard mining: the fewer pairs violate a margin, the more gradient each one gets.
//!
//! Defaults `m⁺ = 0.9`, `m⁻ = 0.6` are the stand-alone "Contrastive" baseline of the authors'
//! code (§2.2, §7). The contextual hybrid loss reuses [`contrastive_on_similarity`] with
//! `0.75 / 0.6`.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distances::{first_non_finite_row, l2_normalize, same_label_matrix, NORMALIZE_EPS};
use crate::losses::{ClassLoss, LossError, LossOutput};
use crate::straight_through::indicator;

/// Configuration of [`ContrastiveLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Positive margin `m⁺`: same-class pairs with cosine below it are pulled together.
    /// Default 0.9 (stand-alone baseline, spec §2.2).
    pub pos_margin: f64,
    /// Negative margin `m⁻`: different-class pairs with cosine above it are pushed apart.
    /// Default 0.6 (spec §2.2).
    pub neg_margin: f64,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            pos_margin: 0.9,
            neg_margin: 0.6,
        }
    }
}

impl ContrastiveConfig {
    /// Checks the margins (finite, each in `[-1, 1]` as cosines are) and builds the loss.
    pub fn init(&self) -> Result<ContrastiveLoss, LossError> {
        check_margin("pos_margin", self.pos_margin)?;
        check_margin("neg_margin", self.neg_margin)?;
        Ok(ContrastiveLoss {
            config: self.clone(),
        })
    }
}

fn check_margin(name: &str, value: f64) -> Result<(), LossError> {
    if value.is_finite() && (-1.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(LossError::Invalid(format!(
            "contrastive: {name} = {value} must be a cosine in [-1, 1]"
        )))
    }
}

/// Count-normalised margin contrastive loss (see the module documentation).
#[derive(Debug, Clone)]
pub struct ContrastiveLoss {
    config: ContrastiveConfig,
}

impl ContrastiveLoss {
    /// The configuration this loss was built from.
    pub fn config(&self) -> &ContrastiveConfig {
        &self.config
    }
}

impl ClassLoss for ContrastiveLoss {
    fn name(&self) -> &'static str {
        "contrastive"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        check_class_batch("contrastive", &embeddings, labels)?;
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let f = l2_normalize(embeddings, NORMALIZE_EPS);
        let s = f.clone().matmul(f.transpose());
        let same = same_label_matrix(labels, &device, dtype);
        let loss =
            contrastive_on_similarity(s, same, self.config.pos_margin, self.config.neg_margin);
        Ok(LossOutput {
            total: loss.clone(),
            terms: vec![("contrastive", loss)],
        })
    }

    /// The rows `rows` of `S` and of the same-class matrix against every column: `l⁺ + l⁻` of
    /// the anchors' pairs, each part normalised by its own count of active pairs.
    fn forward_anchors(
        &self,
        embeddings: Tensor<2>,
        labels: &[i64],
        rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError> {
        let (n, _) = check_class_batch("contrastive", &embeddings, labels)?;
        super::check_anchor_rows("contrastive", &rows, n)?;
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let f = l2_normalize(embeddings, NORMALIZE_EPS);
        let s = f.clone().slice(rows.clone()).matmul(f.transpose());
        let same = same_label_matrix(labels, &device, dtype).slice(rows);
        let loss =
            contrastive_on_similarity(s, same, self.config.pos_margin, self.config.neg_margin);
        Ok(LossOutput {
            total: loss.clone(),
            terms: vec![("contrastive", loss)],
        })
    }
}

/// `L_con = l⁺ + l⁻` of spec §2.2 on a similarity matrix `s` (`n × n`) and a same-class
/// matrix `same` (`n × n`, 0/1), both with the diagonal; returns a shape-`[1]` tensor.
///
/// Each part is its sum divided by its number of strictly positive terms, the count taken as
/// a constant; a part with no active term is exactly 0 (its sum is 0 and the count is clamped
/// to 1).
pub fn contrastive_on_similarity(
    s: Tensor<2>,
    same: Tensor<2>,
    pos_margin: f64,
    neg_margin: f64,
) -> Tensor<1> {
    let dtype = s.dtype();
    let different = same.clone().neg().add_scalar(1.0);
    let pos_terms = s.clone().neg().add_scalar(pos_margin).clamp_min(0.0) * same;
    let neg_terms = s.sub_scalar(neg_margin).clamp_min(0.0) * different;
    let pos_count = indicator(pos_terms.clone().detach().greater_elem(0.0), dtype)
        .sum()
        .clamp_min(1.0);
    let neg_count = indicator(neg_terms.clone().detach().greater_elem(0.0), dtype)
        .sum()
        .clamp_min(1.0);
    pos_terms.sum() / pos_count + neg_terms.sum() / neg_count
}

/// Validates a class-labelled batch: `embeddings` is `n × d` with `n ≥ 1`, `d ≥ 1`, every
/// entry finite, and `labels.len() = n`. `loss` names the caller in the error message.
///
/// Shared by every [`ClassLoss`] of this crate so their errors read alike.
pub fn check_class_batch(
    loss: &str,
    embeddings: &Tensor<2>,
    labels: &[i64],
) -> Result<(usize, usize), LossError> {
    let [n, d] = embeddings.dims();
    check_class_shape(loss, n, d, labels)?;
    if let Some(row) = first_non_finite_row(embeddings) {
        return Err(non_finite_embeddings(loss, row));
    }
    Ok((n, d))
}

/// The shape half of [`check_class_batch`], for callers that check finiteness on the host.
pub(crate) fn check_class_shape(
    loss: &str,
    n: usize,
    d: usize,
    labels: &[i64],
) -> Result<(), LossError> {
    if n == 0 || d == 0 {
        return Err(LossError::Invalid(format!(
            "{loss}: embeddings are {n} × {d}; need at least one row and one column"
        )));
    }
    if labels.len() != n {
        return Err(LossError::Invalid(format!(
            "{loss}: labels has {} entries but embeddings have {n} rows",
            labels.len()
        )));
    }
    Ok(())
}

/// The error [`check_class_batch`] gives for a non-finite embeddings row.
pub(crate) fn non_finite_embeddings(loss: &str, row: usize) -> LossError {
    LossError::Invalid(format!(
        "{loss}: embeddings row {row} contains NaN or infinity"
    ))
}
