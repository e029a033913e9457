//! Multi-similarity pair mining (Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with
//! General Pair Weighting for Deep Metric Learning", CVPR 2019; PML `MultiSimilarityMiner`).
//!
//! On cosine similarities `S` of the L2-normalised embeddings, for each anchor `a`:
//! - a positive pair `(a, p)` is kept if `S_ap − ε < max_{n ∈ N(a)} S_an`;
//! - a negative pair `(a, n)` is kept if `S_an + ε > min_{p ∈ P(a)} S_ap`,
//!
//! where `P(a)` are the other members of `a`'s class and `N(a)` the other classes' members. An
//! anchor without negatives keeps no positive pair, one without positives keeps no negative pair
//! (PML semantics). Default `ε = 0.1` (PML default; the paper's P224 `MS+miner` baseline uses
//! `MultiSimilarityMiner()` with it, spec §7).

use serde::{Deserialize, Serialize};

use super::{check_labels, HostBatch, IndexTuples, Miner};
use crate::losses::LossError;

/// Parameters of [`MultiSimilarityMiner`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiSimilarityMinerConfig {
    /// Similarity margin ε (PML default 0.1).
    pub epsilon: f64,
}

impl Default for MultiSimilarityMinerConfig {
    fn default() -> Self {
        Self { epsilon: 0.1 }
    }
}

impl MultiSimilarityMinerConfig {
    /// Builds the miner. Errors if `epsilon` is not finite.
    pub fn init(&self) -> Result<MultiSimilarityMiner, LossError> {
        if !self.epsilon.is_finite() {
            return Err(LossError::Invalid(format!(
                "multi_similarity miner: parameter `epsilon` = {} must be finite",
                self.epsilon
            )));
        }
        Ok(MultiSimilarityMiner {
            epsilon: self.epsilon,
        })
    }
}

/// Multi-similarity pair mining; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct MultiSimilarityMiner {
    epsilon: f64,
}

impl Miner for MultiSimilarityMiner {
    fn name(&self) -> &'static str {
        "multi_similarity"
    }

    fn mine(&self, batch: &HostBatch, labels: &[i64]) -> Result<IndexTuples, LossError> {
        check_labels("multi_similarity", batch, labels)?;
        let n = batch.n;
        let s = batch.normalized().gram();
        let mut positives = Vec::new();
        let mut negatives = Vec::new();
        for a in 0..n {
            let row = &s[a * n..(a + 1) * n];
            let pos = (0..n).filter(|&j| j != a && labels[j] == labels[a]);
            let neg = (0..n).filter(|&j| labels[j] != labels[a]);
            let max_neg = neg
                .clone()
                .map(|j| row[j])
                .fold(f64::NEG_INFINITY, f64::max);
            let min_pos = pos.clone().map(|j| row[j]).fold(f64::INFINITY, f64::min);
            positives.extend(
                pos.filter(|&p| row[p] - self.epsilon < max_neg)
                    .map(|p| (a, p)),
            );
            negatives.extend(
                neg.filter(|&m| row[m] + self.epsilon > min_pos)
                    .map(|m| (a, m)),
            );
        }
        Ok(IndexTuples::Pairs {
            positives,
            negatives,
        })
    }
}
