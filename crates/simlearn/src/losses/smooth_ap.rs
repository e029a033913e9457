//! Smooth-AP (Brown, Xie, Kalogeiton, Zisserman, "Smooth-AP: Smoothing the Path Towards
//! Large-Scale Image Retrieval", ECCV 2020): average precision with the rank's Heaviside step
//! replaced by a sigmoid of temperature τ.
//!
//! Every row `i` of the batch is a query; the other rows are its retrieval set. With `S_ij` the
//! cosine similarity of the L2-normalised embeddings, `P_i` the other members of `i`'s class
//! and `Ω_i = {j ≠ i}`, and `σ_τ(x) = 1 / (1 + e^{−x/τ})`:
//!
//! ```text
//! R(i, p)  = 1 + Σ_{j∈Ω_i, j≠p} σ_τ(S_ij − S_ip)      (smoothed rank of p among all)
//! R⁺(i, p) = 1 + Σ_{j∈P_i, j≠p} σ_τ(S_ij − S_ip)      (smoothed rank of p among positives)
//! AP_i     = (1/|P_i|) Σ_{p∈P_i} R⁺(i, p) / R(i, p)
//! L        = 1 − (1/|Q|) Σ_{i∈Q} AP_i,   Q = {i : |P_i| > 0}
//! ```
//!
//! A batch where no row has a positive gives 0 with a zero gradient. Cost: `n³` sigmoids held
//! as `n × n × n` tensors (a few of them live at once for the backward pass; n = 256 is
//! 16.8 M entries each, 64 MiB in f32); masks are `n × n`.
//!
//! Default `τ = 0.01`: Brown et al.'s setting, also used by the contextual paper's `smoothap`
//! baseline (spec §7: "loss = 1 − mean AP over the batch").
//!
//! Difference from PML 2.9's `SmoothAPLoss` (documented choice): PML counts the query itself in
//! both ranks and as one of its own positives (its masks only exclude `j = p`), and requires
//! equal class sizes in contiguous blocks; here the query is excluded from its retrieval set,
//! as in the paper's definition, and any label layout works.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use super::baseline_util::{check_param, constant, cosine_matrix, validate_batch, zero_loss};
use super::{ClassLoss, LossError, LossOutput};

/// Configuration of [`SmoothApLoss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmoothApConfig {
    /// Sigmoid temperature τ (default 0.01, Brown et al. 2020).
    pub temperature: f64,
}

impl Default for SmoothApConfig {
    fn default() -> Self {
        Self { temperature: 0.01 }
    }
}

impl SmoothApConfig {
    /// Builds the loss. Errors unless τ > 0.
    pub fn init(&self) -> Result<SmoothApLoss, LossError> {
        check_param(
            "smooth_ap",
            "temperature",
            self.temperature,
            |v| v > 0.0,
            "> 0",
        )?;
        Ok(SmoothApLoss {
            temperature: self.temperature,
        })
    }
}

/// Smooth-AP loss; see the module documentation.
#[derive(Module, Debug)]
pub struct SmoothApLoss {
    temperature: f64,
}

impl ClassLoss for SmoothApLoss {
    fn name(&self) -> &'static str {
        "smooth_ap"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let (n, _) = validate_batch("smooth_ap", &embeddings, labels)?;
        // n × n masks: competitors j ≠ i, positive pairs (i, p), and 1/|P_i| per query.
        let mut others = vec![1.0; n * n];
        let mut pos_pair = vec![0.0; n * n];
        let mut per_query = vec![0.0; n];
        let mut queries = 0usize;
        for i in 0..n {
            others[i * n + i] = 0.0;
            let count = (0..n)
                .filter(|&p| p != i && labels[p] == labels[i])
                .inspect(|&p| pos_pair[i * n + p] = 1.0)
                .count();
            if count > 0 {
                queries += 1;
                per_query[i] = 1.0 / count as f64;
            }
        }
        if queries == 0 {
            let total = zero_loss(embeddings);
            return Ok(LossOutput {
                terms: vec![("smooth_ap", total.clone())],
                total,
            });
        }
        let device = embeddings.device();
        let dtype = embeddings.dtype();
        let s = cosine_matrix(embeddings);
        // sig[i, p, j] = σ_τ(S_ij − S_ip), an n × n × n tensor.
        let diff = s.clone().unsqueeze_dim::<3>(1) - s.unsqueeze_dim::<3>(2);
        let sig = sigmoid(diff.div_scalar(self.temperature));
        let others = constant(others, [n, n], &device, dtype);
        let pos_f = constant(pos_pair.clone(), [n, n], &device, dtype);
        // Summing over all j ≠ i (resp. all positives j) includes j = p, whose term is exactly
        // σ(0) = ½ with zero derivative (S_ip − S_ip ≡ 0) when p is a positive; "1 + Σ − ½" is
        // therefore the rank with j = p excluded, and the masks stay n × n.
        let rank_all = (sig.clone() * others.unsqueeze_dim::<3>(1))
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            .add_scalar(0.5);
        let rank_pos = (sig * pos_f.unsqueeze_dim::<3>(1))
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            .add_scalar(0.5);
        let ratio = rank_pos / rank_all * constant(pos_pair, [n, n], &device, dtype);
        let ap = ratio.sum_dim(1) * constant(per_query, [n, 1], &device, dtype);
        let mean_ap = ap.sum().div_scalar(queries as f64);
        let total = mean_ap.neg().add_scalar(1.0);
        Ok(LossOutput {
            terms: vec![("smooth_ap", total.clone())],
            total,
        })
    }
}
