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
//! A batch where no row has a positive gives 0 with a zero gradient. Cost: `n³` sigmoids
//! (an `n × n × n` tensor; n = 256 is 16.8 M entries).
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
        // Masks over (query i, positive p, competitor j), row-major n × n × n.
        let mut all = vec![0.0; n * n * n];
        let mut pos_only = vec![0.0; n * n * n];
        let mut pos_pair = vec![0.0; n * n];
        let mut per_query = vec![0.0; n];
        let mut queries = 0usize;
        for i in 0..n {
            let positives: Vec<usize> = (0..n)
                .filter(|&p| p != i && labels[p] == labels[i])
                .collect();
            if positives.is_empty() {
                continue;
            }
            queries += 1;
            per_query[i] = 1.0 / positives.len() as f64;
            for &p in &positives {
                pos_pair[i * n + p] = 1.0;
                for j in 0..n {
                    if j == i || j == p {
                        continue;
                    }
                    all[(i * n + p) * n + j] = 1.0;
                    if labels[j] == labels[i] {
                        pos_only[(i * n + p) * n + j] = 1.0;
                    }
                }
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
        // diff[i, p, j] = S_ij − S_ip
        let diff = s.clone().unsqueeze_dim::<3>(1) - s.unsqueeze_dim::<3>(2);
        let sig = sigmoid(diff.div_scalar(self.temperature));
        let all = constant(all, [n, n, n], &device, dtype);
        let pos_only = constant(pos_only, [n, n, n], &device, dtype);
        let rank_all = (sig.clone() * all)
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            .add_scalar(1.0);
        let rank_pos = (sig * pos_only)
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            .add_scalar(1.0);
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
