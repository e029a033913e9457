//! Distance-weighted sampling (Wu, Manmatha, Smola, Krähenbühl, "Sampling Matters in Deep
//! Embedding Learning", ICCV 2017), with pytorch-metric-learning's `DistanceWeightedMiner`
//! semantics and defaults.
//!
//! On the unit sphere in `ℝᵈ` the pairwise distance of uniformly spread points has density
//! `q(δ) ∝ δ^{d−2} · (1 − δ²/4)^{(d−3)/2}`. Negatives are sampled with weight `1/q`, so that
//! sampled distances are spread out rather than concentrated near √2:
//!
//! `log w(a, n) = (2 − d)·ln δ − ((d − 3)/2)·ln(1 − δ²/4)`, with `δ = max(‖z_a − z_n‖, cutoff)`,
//!
//! where `z` are the L2-normalised embeddings. Weights are zero for same-class pairs, for
//! `‖z_a − z_n‖ ≥ nonzero_loss_cutoff` (such negatives give no triplet loss) and where the
//! formula is not finite; each anchor's weights are normalised to sum to 1.
//!
//! Defaults (PML `DistanceWeightedMiner()`, as used by the contextual paper's `triplet`
//! baseline, spec §7): `cutoff = 0.5`, `nonzero_loss_cutoff = 1.4`.
//!
//! Triplets: for every anchor `a` and every positive `p ≠ a` of its class, one negative is drawn
//! from `w(a, ·)`. Anchors whose weights are all zero give no triplet. Difference from PML
//! (documented choice): PML draws `|class|` positives per anchor uniformly with replacement; we
//! take each positive once, which has the same expectation and less variance. Sampling uses a
//! ChaCha8 generator seeded from the config (`seed`, default 0) and shared by clones of the miner,
//! so a run is reproducible.

use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{check_labels, HostBatch, IndexTuples, Miner};
use crate::losses::LossError;

/// Parameters of [`DistanceWeightedMiner`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistanceWeightedConfig {
    /// Distances below this are raised to it before weighting (PML default 0.5).
    pub cutoff: f64,
    /// Negatives at this distance or farther get weight 0 (PML default 1.4).
    pub nonzero_loss_cutoff: f64,
    /// Seed of the sampling generator.
    pub seed: u64,
}

impl Default for DistanceWeightedConfig {
    fn default() -> Self {
        Self {
            cutoff: 0.5,
            nonzero_loss_cutoff: 1.4,
            seed: 0,
        }
    }
}

impl DistanceWeightedConfig {
    /// Builds the miner. Errors if `cutoff` is not in `[0, 2)` or `nonzero_loss_cutoff` is not
    /// in `(cutoff, ∞)`.
    pub fn init(&self) -> Result<DistanceWeightedMiner, LossError> {
        if !(self.cutoff.is_finite() && (0.0..2.0).contains(&self.cutoff)) {
            return Err(LossError::Invalid(format!(
                "distance_weighted miner: parameter `cutoff` = {} must be in [0, 2)",
                self.cutoff
            )));
        }
        if !(self.nonzero_loss_cutoff.is_finite() && self.nonzero_loss_cutoff > self.cutoff) {
            return Err(LossError::Invalid(format!(
                "distance_weighted miner: parameter `nonzero_loss_cutoff` = {} must be finite and > cutoff ({})",
                self.nonzero_loss_cutoff, self.cutoff
            )));
        }
        Ok(DistanceWeightedMiner {
            cutoff: self.cutoff,
            nonzero_loss_cutoff: self.nonzero_loss_cutoff,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(self.seed))),
        })
    }
}

/// Distance-weighted negative sampling; see the module documentation.
#[derive(Debug, Clone)]
pub struct DistanceWeightedMiner {
    cutoff: f64,
    nonzero_loss_cutoff: f64,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl DistanceWeightedMiner {
    /// Row-major `n × n` sampling weights (each anchor row sums to 1, or is all zero when the
    /// anchor has no eligible negative). Exposed for tests and diagnostics.
    pub fn weights(&self, batch: &HostBatch, labels: &[i64]) -> Vec<f64> {
        let n = batch.n;
        let d = batch.d as f64;
        let dist = batch.normalized().euclidean();
        let mut log_w = vec![f64::NEG_INFINITY; n * n];
        for a in 0..n {
            for j in 0..n {
                let raw = dist[a * n + j];
                if labels[a] == labels[j] || raw >= self.nonzero_loss_cutoff {
                    continue;
                }
                let delta = raw.max(self.cutoff);
                let lw =
                    (2.0 - d) * delta.ln() - ((d - 3.0) / 2.0) * (1.0 - 0.25 * delta * delta).ln();
                if lw.is_finite() {
                    log_w[a * n + j] = lw;
                }
            }
        }
        let mut w = vec![0.0; n * n];
        for a in 0..n {
            let row = &log_w[a * n..(a + 1) * n];
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !max.is_finite() {
                continue;
            }
            // Subtracting the row maximum keeps exp() in range; normalisation removes it again.
            let exps: Vec<f64> = row.iter().map(|&l| (l - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for (j, e) in exps.into_iter().enumerate() {
                w[a * n + j] = e / total;
            }
        }
        w
    }
}

impl Miner for DistanceWeightedMiner {
    fn name(&self) -> &'static str {
        "distance_weighted"
    }

    fn mine(&self, batch: &HostBatch, labels: &[i64]) -> Result<IndexTuples, LossError> {
        check_labels("distance_weighted", batch, labels)?;
        let n = batch.n;
        let w = self.weights(batch, labels);
        let mut rng = self.rng.lock().map_err(|_| {
            LossError::Invalid("distance_weighted miner: generator lock poisoned".into())
        })?;
        let mut triplets = Vec::new();
        for a in 0..n {
            let row = &w[a * n..(a + 1) * n];
            if row.iter().all(|&x| x == 0.0) {
                continue;
            }
            for p in (0..n).filter(|&p| p != a && labels[p] == labels[a]) {
                let u: f64 = rng.random::<f64>();
                let mut acc = 0.0;
                // Inverse-CDF draw; the last eligible index absorbs rounding.
                let mut chosen = None;
                for (j, &x) in row.iter().enumerate() {
                    if x > 0.0 {
                        acc += x;
                        chosen = Some(j);
                        if u < acc {
                            break;
                        }
                    }
                }
                if let Some(neg) = chosen {
                    triplets.push((a, p, neg));
                }
            }
        }
        Ok(IndexTuples::Triplets(triplets))
    }
}
