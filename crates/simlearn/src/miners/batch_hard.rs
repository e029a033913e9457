//! Batch-hard mining (Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person
//! Re-Identification", 2017; PML `BatchHardMiner`).
//!
//! For every anchor `a` that has at least one positive and one negative in the batch, one triplet
//! `(a, p*, n*)` with `p* = argmax_{p: y_p = y_a, p ≠ a} ‖z_a − z_p‖` (hardest positive) and
//! `n* = argmin_{n: y_n ≠ y_a} ‖z_a − z_n‖` (hardest negative), on L2-normalised embeddings `z`
//! (PML's default distance for this miner). Ties go to the lowest row index.

use super::{check_labels, HostBatch, IndexTuples, Miner};
use crate::losses::LossError;

/// Hardest positive and hardest negative per anchor; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchHardMiner;

impl Miner for BatchHardMiner {
    fn name(&self) -> &'static str {
        "batch_hard"
    }

    fn mine(&self, batch: &HostBatch, labels: &[i64]) -> Result<IndexTuples, LossError> {
        check_labels("batch_hard", batch, labels)?;
        let n = batch.n;
        let dist = batch.normalized().euclidean();
        let mut triplets = Vec::new();
        for a in 0..n {
            let mut hardest_pos: Option<(usize, f64)> = None;
            let mut hardest_neg: Option<(usize, f64)> = None;
            for j in 0..n {
                let dj = dist[a * n + j];
                if labels[j] == labels[a] {
                    if j != a && hardest_pos.is_none_or(|(_, best)| dj > best) {
                        hardest_pos = Some((j, dj));
                    }
                } else if hardest_neg.is_none_or(|(_, best)| dj < best) {
                    hardest_neg = Some((j, dj));
                }
            }
            if let (Some((p, _)), Some((neg, _))) = (hardest_pos, hardest_neg) {
                triplets.push((a, p, neg));
            }
        }
        Ok(IndexTuples::Triplets(triplets))
    }
}
