//! The log-ratio loss of Kim, Seo, Laptev, Cho & Kwak, "Deep Metric Learning Beyond Binary
//! Supervision", CVPR 2019 (arXiv 1904.09626), as specified in `log-ratio-loss.md` §2, §6, §8.
//!
//! For an anchor `a` and two other batch members `i`, `j`, with embedding distance `δ` and
//! label distance `g`, the loss regresses log distance ratios onto each other:
//!
//! ```text
//! ℓ(a,i,j) = ( ln(δ_ai/δ_aj) − ln(g_ai/g_aj) )² = (u_ai − u_aj)²,
//! u_ak = ln(δ_ak + ε_log) − ln(g_ak + ε_log)
//! ```
//!
//! **Distance form** ([`LogRatioDistance`]): one field sets the power on *both* sides, so the
//! target geometry cannot be changed by mixing powers (§2.2, §8.7).
//! - `plain` (default, the authors' code): `δ = sqrt(‖f_a − f_k‖² + ε_in)`, `g` as given.
//! - `squared` (the paper): `δ = ‖f_a − f_k‖² + ε_in`, `g²`.
//!
//! `ε_in = eps_in_per_dim / d` (default `1e-4/d`, code) and `ε_log = 1e-6` (code, both sides).
//! Set both to 0 for the paper's ε-free form. Without ε the paper form equals 4× the plain one
//! (`ln x² = 2 ln x`, §2.2).
//!
//! **Anchors** ([`AnchorMode`]):
//! - `first` (default, the authors' code): one anchor per batch, row 0; the `m = B − 1` others
//!   form all `m(m−1)/2` pairs, ties in label distance included (target log-ratio 0). Then
//!   `Σ_{i<j}(u_i − u_j)² = m Σ_k (u_k − ū)²`, so `L = 2·Var_unbiased(u)` (§2.4), computed in
//!   two passes (mean, then squared deviations): `O(B·d)`, no `m × m` matrix.
//! - `all`: every row is an anchor (batch-all, §2.7, mode C of §6); triplets `(a, i, j)` with
//!   distinct indices and, by default, `g_ai < g_aj` strictly. The mean runs over all valid
//!   triplets of all anchors.
//!
//! **Ties** ([`TiePolicy`]): `include` keeps equal-label-distance pairs, `exclude` drops them
//! (the paper's strict `<`). Unset, each anchor mode uses its reference convention: `first`
//! includes ties (code), `all` excludes them (§2.7).
//!
//! Any pair set other than "all pairs of one anchor" is summed without enumerating pairs: with
//! each anchor's members sorted by label distance and prefix sums `C1 = Σ u`, `C2 = Σ u²`,
//! `Σ_{q before p's tie group}(u_p − u_q)² = c_p u_p² − 2 u_p C1 + C2`, `c_p` the number of such
//! `q`. After subtracting each anchor's (detached) mean from its `u`, which leaves every
//! difference and so the loss and its gradient unchanged, the expansion does not cancel
//! catastrophically. Cost: one `B × B` Gram product for the distances plus `O(B²)` element-wise
//! work and an `O(B² log B)` host sort of the label distances; no `B³` tensor.
//!
//! **Zero label distance** ([`ZeroLabelPolicy`], §8.1): the code's `ln(0 + 1e-6) = −13.8` lets
//! one identical-label neighbour dominate the batch (§6: L jumps from 0.26 to 90.87).
//! `log_eps` (default) keeps that behaviour, `skip` drops members with `g = 0` from the anchor's
//! pairs, `floor(x)` replaces `g` by `max(g, x)` before the power is applied.
//!
//! With `ε_in = ε_log = 0` two coincident embeddings give `ln 0`; keep an ε for training.
//!
//! No L2 normalisation: the loss is invariant to the embedding scale up to the ε terms (§2.4,
//! §8.6). A batch in which no triplet survives (all members skipped) has loss exactly 0.

use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::distances::{squared_distances_to_row, squared_euclidean_matrix};
use crate::losses::continuous::{check_continuous_batch, sort_members_by_label};
use crate::losses::{ContinuousLoss, LossError, LossOutput};

/// The power applied to both the embedding and the label distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogRatioDistance {
    /// Euclidean distance `sqrt(s + ε_in)` and label distance as given (authors' code).
    #[default]
    Plain,
    /// Squared Euclidean distance `s + ε_in` and squared label distance (paper).
    Squared,
}

/// Which batch rows act as anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnchorMode {
    /// Row 0 only (authors' code; the dense-triplet-mining sampler puts the anchor there).
    #[default]
    First,
    /// Every row (batch-all).
    All,
}

/// Whether pairs with equal label distance to the anchor form triplets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TiePolicy {
    /// Keep them (target log-ratio 0), as the authors' code does.
    Include,
    /// Drop them (strict `g_ai < g_aj`), as the paper and the batch-all variant do.
    Exclude,
}

/// What to do with a label distance of exactly 0 (§8.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ZeroLabelPolicy {
    /// `ln(0 + ε_log)`, as the authors' code (a zero dominates the batch).
    #[default]
    LogEps,
    /// Drop members with `g = 0` from the anchor's triplets.
    Skip,
    /// Use `max(g, x)` instead of `g`; `x > 0`.
    Floor(f64),
}

/// Configuration of [`LogRatioLoss`]; defaults are the authors' code (see module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogRatioConfig {
    /// Power of both distances. Default `plain` (code, §2.2).
    pub distance: LogRatioDistance,
    /// `ε_in · d`: the smoothing added to the squared embedding distance is
    /// `eps_in_per_dim / d`. Default `1e-4` (code, §2.2).
    pub eps_in_per_dim: f64,
    /// `ε_log` added inside both logarithms. Default `1e-6` (code, §2.2).
    pub log_eps: f64,
    /// Anchor rows. Default `first` (code, §2.3).
    pub anchors: AnchorMode,
    /// Tie handling; unset means include for `first`, exclude for `all`.
    pub ties: Option<TiePolicy>,
    /// Zero-label-distance policy. Default `log_eps` (code, §8.1).
    pub zero_label: ZeroLabelPolicy,
}

impl Default for LogRatioConfig {
    fn default() -> Self {
        Self {
            distance: LogRatioDistance::Plain,
            eps_in_per_dim: 1e-4,
            log_eps: 1e-6,
            anchors: AnchorMode::First,
            ties: None,
            zero_label: ZeroLabelPolicy::LogEps,
        }
    }
}

impl LogRatioConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<LogRatioLoss, LossError> {
        let bad = |what: String| Err(LossError::Invalid(format!("log_ratio: {what}")));
        if !(self.eps_in_per_dim.is_finite() && self.eps_in_per_dim >= 0.0) {
            return bad(format!(
                "eps_in_per_dim = {} must be finite and ≥ 0",
                self.eps_in_per_dim
            ));
        }
        if !(self.log_eps.is_finite() && self.log_eps >= 0.0) {
            return bad(format!("log_eps = {} must be finite and ≥ 0", self.log_eps));
        }
        if let ZeroLabelPolicy::Floor(x) = self.zero_label {
            if !(x.is_finite() && x > 0.0) {
                return bad(format!("zero_label floor = {x} must be finite and > 0"));
            }
        }
        Ok(LogRatioLoss {
            config: self.clone(),
        })
    }

    /// The tie policy in effect: the explicit one, or the anchor mode's reference convention.
    pub fn effective_ties(&self) -> TiePolicy {
        self.ties.unwrap_or(match self.anchors {
            AnchorMode::First => TiePolicy::Include,
            AnchorMode::All => TiePolicy::Exclude,
        })
    }
}

/// The log-ratio loss (see the module documentation). Build it with [`LogRatioConfig::init`].
#[derive(Debug, Clone)]
pub struct LogRatioLoss {
    config: LogRatioConfig,
}

/// One anchor's members in ascending label distance, with what the pair sum needs.
struct AnchorRow {
    anchor: usize,
    /// Member indices, sorted by transformed label distance (stable: ties keep index order).
    members: Vec<usize>,
    /// `ln(λ + ε_log)` of each member, λ the transformed label distance.
    label_log: Vec<f64>,
    /// For each position, how many earlier positions pair with it.
    before: Vec<usize>,
}

impl LogRatioLoss {
    /// The configuration this loss was built from.
    pub fn config(&self) -> &LogRatioConfig {
        &self.config
    }

    /// The label-side value `λ` of one label distance, or `None` if the member is skipped.
    fn label_value(&self, g: f64) -> Option<f64> {
        let g = match self.config.zero_label {
            ZeroLabelPolicy::LogEps => g,
            ZeroLabelPolicy::Skip if g == 0.0 => return None,
            ZeroLabelPolicy::Skip => g,
            ZeroLabelPolicy::Floor(x) => g.max(x),
        };
        Some(match self.config.distance {
            LogRatioDistance::Plain => g,
            LogRatioDistance::Squared => g * g,
        })
    }

    fn anchor_row(
        &self,
        anchor: usize,
        b: usize,
        label_dist: &[f32],
        ties: TiePolicy,
    ) -> AnchorRow {
        let row = &label_dist[anchor * b..(anchor + 1) * b];
        let values: Vec<Option<f64>> = row.iter().map(|&g| self.label_value(g as f64)).collect();
        let candidates: Vec<usize> = (0..b)
            .filter(|&k| k != anchor && values[k].is_some())
            .collect();
        let lambda = |k: usize| values[k].unwrap_or(0.0);
        let members = sort_members_by_label(candidates, lambda);
        let mut before = Vec::with_capacity(members.len());
        let mut group_start = 0;
        for (p, &k) in members.iter().enumerate() {
            if p > 0 && lambda(k) != lambda(members[p - 1]) {
                group_start = p;
            }
            before.push(match ties {
                TiePolicy::Include => p,
                TiePolicy::Exclude => group_start,
            });
        }
        let label_log = members
            .iter()
            .map(|&k| (lambda(k) + self.config.log_eps).ln())
            .collect();
        AnchorRow {
            anchor,
            members,
            label_log,
            before,
        }
    }

    /// `ln(δ + ε_log)` from squared distances `s`, with the configured power and `ε_in`.
    fn embedding_log(&self, s: Tensor<2>, d: usize) -> Tensor<2> {
        let eps_in = self.config.eps_in_per_dim / d as f64;
        let delta = match self.config.distance {
            LogRatioDistance::Plain => s.add_scalar(eps_in).sqrt(),
            LogRatioDistance::Squared => s.add_scalar(eps_in),
        };
        delta.add_scalar(self.config.log_eps).log()
    }

    /// Single anchor, ties included: `L = 2·Var_unbiased(u)`, two-pass.
    fn closed_form(&self, embeddings: Tensor<2>, row: &AnchorRow, d: usize) -> Tensor<1> {
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let m = row.members.len();
        if m < 2 {
            return zero_loss(embeddings);
        }
        let index = int_tensor(
            row.members.iter().map(|&k| k as i64).collect(),
            [m],
            &device,
        );
        let s = squared_distances_to_row(embeddings, row.anchor).select(0, index); // m × 1
        let label_log = float_tensor(row.label_log.clone(), [m, 1], &device, dtype);
        let u = self.embedding_log(s, d) - label_log;
        let centred = u.clone() - u.mean_dim(0);
        centred.square().sum().mul_scalar(2.0 / (m as f64 - 1.0))
    }

    /// Any anchor set and tie policy, via sorted prefix sums (see module docs).
    fn pairwise(&self, embeddings: Tensor<2>, rows: &[AnchorRow], d: usize) -> Tensor<1> {
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let [b, _] = embeddings.dims();
        let r = rows.len();
        let pairs: usize = rows
            .iter()
            .map(|row| row.before.iter().sum::<usize>())
            .sum();
        let width = rows.iter().map(|row| row.members.len()).max().unwrap_or(0);
        if pairs == 0 || width < 2 {
            return zero_loss(embeddings);
        }

        // Squared distances from each anchor (rows) to every member (columns). Self entries
        // get +1 so that their log and its derivative stay finite even with ε_in = ε_log = 0;
        // they are never gathered, but a NaN there would still poison the backward pass.
        let (s, self_mask) = if rows.len() == 1 {
            let anchor = rows[0].anchor;
            let s = squared_distances_to_row(embeddings, anchor).transpose(); // 1 × B
            let mut mask = vec![0.0; b];
            mask[anchor] = 1.0;
            (s, float_tensor(mask, [1, b], &device, dtype))
        } else {
            // Centring first (distances are translation invariant) shrinks the norms, and so
            // the cancellation error of the Gram expansion, for embeddings far from the origin.
            let centred = embeddings.clone() - embeddings.mean_dim(0);
            let s = squared_euclidean_matrix(centred.clone(), centred);
            let eye = Tensor::<2>::eye(b, &device).cast(dtype);
            (s, eye)
        };
        let emb_log = self.embedding_log(s + self_mask, d); // r × B

        let mut index = Vec::with_capacity(r * width);
        let mut label_log = Vec::with_capacity(r * width);
        let mut valid = Vec::with_capacity(r * width);
        let mut before = Vec::with_capacity(r * width);
        for row in rows {
            let m = row.members.len();
            for p in 0..width {
                if p < m {
                    index.push(row.members[p] as i64);
                    label_log.push(row.label_log[p]);
                    valid.push(1.0);
                    before.push(row.before[p] as i64);
                } else {
                    // Padding points at the anchor itself (finite) and carries weight 0.
                    index.push(row.anchor as i64);
                    label_log.push(0.0);
                    valid.push(0.0);
                    before.push(0);
                }
            }
        }
        let index = int_tensor(index, [r, width], &device);
        let label_log = float_tensor(label_log, [r, width], &device, dtype);
        let valid = float_tensor(valid, [r, width], &device, dtype);
        let before_count = float_tensor(
            before.iter().map(|&c| c as f64).collect(),
            [r, width],
            &device,
            dtype,
        );
        let before_index = int_tensor(before, [r, width], &device);

        let u = (emb_log.gather(1, index) - label_log) * valid.clone();
        let counts = valid.clone().sum_dim(1).clamp_min(1.0);
        let row_mean = (u.clone().sum_dim(1) / counts).detach();
        let u = (u - row_mean) * valid.clone();
        let zeros = Tensor::<2>::zeros([r, 1], (&device, dtype));
        let c1 = Tensor::cat(vec![zeros.clone(), u.clone().cumsum(1)], 1);
        let c2 = Tensor::cat(vec![zeros, u.clone().square().cumsum(1)], 1);
        let s1 = c1.gather(1, before_index.clone());
        let s2 = c2.gather(1, before_index);
        let per_position = before_count * u.clone().square() - u.mul_scalar(2.0) * s1 + s2;
        (per_position * valid).sum().mul_scalar(1.0 / pairs as f64)
    }
}

impl ContinuousLoss for LogRatioLoss {
    fn name(&self) -> &'static str {
        "log_ratio"
    }

    fn forward(&self, embeddings: Tensor<2>, label_dist: &[f32]) -> Result<LossOutput, LossError> {
        let rows_used = match self.config.anchors {
            AnchorMode::First => 1,
            AnchorMode::All => usize::MAX,
        };
        let (b, d) = check_continuous_batch("log_ratio", &embeddings, label_dist, 3, rows_used)?;
        let ties = self.config.effective_ties();
        let loss = match (self.config.anchors, ties) {
            (AnchorMode::First, TiePolicy::Include) => {
                let row = self.anchor_row(0, b, label_dist, ties);
                self.closed_form(embeddings, &row, d)
            }
            (AnchorMode::First, TiePolicy::Exclude) => {
                let row = self.anchor_row(0, b, label_dist, ties);
                self.pairwise(embeddings, &[row], d)
            }
            (AnchorMode::All, _) => {
                let rows: Vec<AnchorRow> = (0..b)
                    .map(|a| self.anchor_row(a, b, label_dist, ties))
                    .collect();
                self.pairwise(embeddings, &rows, d)
            }
        };
        Ok(LossOutput {
            total: loss.clone(),
            terms: vec![("log_ratio", loss)],
        })
    }
}

/// A loss of exactly 0 that stays attached to the graph (zero gradient), for batches with no
/// triplet.
pub(crate) fn zero_loss(embeddings: Tensor<2>) -> Tensor<1> {
    embeddings.sum().mul_scalar(0.0)
}

pub(crate) fn int_tensor<const D: usize>(
    values: Vec<i64>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub(crate) fn float_tensor<const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), (device, dtype))
}
