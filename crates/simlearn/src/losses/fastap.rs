//! FastAP (Cakir, He, Xia, Kulis, Sclaroff, "Deep Metric Learning to Rank", CVPR 2019) with
//! pytorch-metric-learning's `FastAPLoss` semantics: average precision computed from soft
//! histograms of distances.
//!
//! With `z` the L2-normalised embeddings, `D_ij = ‖z_i − z_j‖²` (squared distance, range
//! `[0, 4]`), `L` bins of width `Δ = 4/L` and bin centres `c_l = l·Δ`, `l = 0..L` (`L + 1`
//! centres), each distance is spread over its two nearest centres by a triangular kernel
//! `δ_l(x) = max(0, 1 − |x − c_l|/Δ)`. For a query `i` with positives `P_i` (other members of its
//! class, `N⁺_i = |P_i|`) and negatives `N_i`:
//!
//! ```text
//! h⁺_l = Σ_{j∈P_i} δ_l(D_ij),   h⁻_l = Σ_{j∈N_i} δ_l(D_ij)
//! H⁺_l = Σ_{l'≤l} h⁺_l',         H_l = Σ_{l'≤l} (h⁺_l' + h⁻_l')
//! FastAP_i = (1/N⁺_i) Σ_l h⁺_l · H⁺_l / H_l        (terms with H_l = 0 are 0)
//! L = mean over {i : N⁺_i > 0} of (1 − FastAP_i)
//! ```
//!
//! A batch where no row has a positive gives 0 with a zero gradient.
//!
//! Default `num_bins = 10`: PML `FastAPLoss()` default, used unchanged by the contextual paper's
//! `fastap` baseline (spec §7).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::baseline_util::{
    constant, label_masks, squared_distance_matrix_normalized, validate_batch, zero_loss,
};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`FastApLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FastApConfig {
    /// Number of histogram bins over the squared-distance range [0, 4] (PML default 10).
    pub num_bins: usize,
}

impl Default for FastApConfig {
    fn default() -> Self {
        Self { num_bins: 10 }
    }
}

impl FastApConfig {
    /// Builds the loss. Errors unless `num_bins ≥ 1`.
    pub fn init(&self) -> Result<FastApLoss, LossError> {
        if self.num_bins == 0 {
            return Err(LossError::Invalid(
                "fastap: parameter `num_bins` = 0 must be ≥ 1".to_string(),
            ));
        }
        Ok(FastApLoss {
            num_bins: self.num_bins,
        })
    }
}

/// FastAP loss; see the module documentation.
#[derive(Module, Debug)]
pub struct FastApLoss {
    num_bins: usize,
}

/// Floor of the cumulative histogram in the division `H⁺/H`: where `H_l` is 0, so are `h⁺_l`
/// and `H⁺_l`, so the floor only turns 0/0 into 0 (PML's `safe_H` mask) with a zero gradient.
const HIST_FLOOR: f64 = 1.0e-30;

impl ClassLoss for FastApLoss {
    fn name(&self) -> &'static str {
        "fastap"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("fastap", &embeddings, labels)?;
        let (pos, neg) = label_masks(labels);
        let pos_counts: Vec<usize> = pos
            .chunks(n)
            .map(|r| r.iter().filter(|&&b| b).count())
            .collect();
        let queries = pos_counts.iter().filter(|&&c| c > 0).count();
        if queries == 0 {
            let total = zero_loss(embeddings);
            return Ok(LossOutput {
                terms: vec![("fastap", total.clone())],
                total,
            });
        }
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let to_f = |m: Vec<bool>| -> Vec<f64> {
            m.into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect()
        };
        let pos_f = constant(to_f(pos), [n, n], &device, dtype);
        let neg_f = constant(to_f(neg), [n, n], &device, dtype);
        let dist = squared_distance_matrix_normalized(embeddings);
        let delta = 4.0 / self.num_bins as f64;
        let zeros = || Tensor::<2>::zeros([n, 1], (&device, dtype));
        let (mut cum_pos, mut cum_all, mut fast_ap) = (zeros(), zeros(), zeros());
        for l in 0..=self.num_bins {
            let centre = l as f64 * delta;
            let pulse = dist
                .clone()
                .sub_scalar(centre)
                .abs()
                .div_scalar(delta)
                .neg()
                .add_scalar(1.0)
                .clamp_min(0.0);
            let h_pos = (pulse.clone() * pos_f.clone()).sum_dim(1);
            let h_neg = (pulse * neg_f.clone()).sum_dim(1);
            cum_pos = cum_pos + h_pos.clone();
            cum_all = cum_all + h_pos.clone() + h_neg;
            fast_ap = fast_ap + h_pos * cum_pos.clone() / cum_all.clone().clamp_min(HIST_FLOOR);
        }
        let inv_counts: Vec<f64> = pos_counts
            .iter()
            .map(|&c| if c > 0 { 1.0 / c as f64 } else { 0.0 })
            .collect();
        let query_mask: Vec<f64> = pos_counts
            .iter()
            .map(|&c| if c > 0 { 1.0 } else { 0.0 })
            .collect();
        let fast_ap = fast_ap * constant(inv_counts, [n, 1], &device, dtype);
        let per_query =
            fast_ap.neg().add_scalar(1.0) * constant(query_mask, [n, 1], &device, dtype);
        let total = per_query.sum().div_scalar(queries as f64);
        Ok(LossOutput {
            terms: vec![("fastap", total.clone())],
            total,
        })
    }
}
