//! Online tuple miners: which pairs or triplets of a batch a loss should use.
//!
//! A miner looks at the (detached) embeddings of a batch, read back to the host as a
//! [`HostBatch`], and their labels, and returns [`IndexTuples`]: anchor–positive /
//! anchor–negative pairs or (anchor, positive, negative) triplets of row indices. Losses convert
//! between the two forms as pytorch-metric-learning (PML) does: triplets give the pairs
//! `(a, p)` and `(a, n)`; pairs give every triplet `(a, p, n)` whose pairs share the anchor.
//!
//! Miners:
//! - [`AllTuples`]: every valid pair / triplet (PML's implicit default).
//! - [`distance_weighted::DistanceWeightedMiner`]: Wu et al. (2017) distance-weighted sampling.
//! - [`batch_hard::BatchHardMiner`]: hardest positive and hardest negative per anchor.
//! - [`multi_similarity::MultiSimilarityMiner`]: the pair mining of Wang et al. (2019).
//!
//! [`MinerConfig`] (serde) chooses one: in TOML either a bare name, `miner = "batch_hard"`,
//! or a table with parameters, `miner = { name = "distance_weighted", cutoff = 0.5 }`.

pub mod batch_hard;
pub mod distance_weighted;
pub mod multi_similarity;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use crate::losses::baseline_util::HostBatch;
use crate::losses::LossError;

/// A list of `(anchor, other)` row-index pairs.
pub type PairList = Vec<(usize, usize)>;

/// Row-index tuples selected from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexTuples {
    /// Anchor–positive and anchor–negative pairs, `(anchor, other)`.
    Pairs {
        /// `(a, p)` with `label[a] == label[p]`, `a ≠ p`.
        positives: Vec<(usize, usize)>,
        /// `(a, n)` with `label[a] ≠ label[n]`.
        negatives: Vec<(usize, usize)>,
    },
    /// `(a, p, n)` triplets.
    Triplets(Vec<(usize, usize, usize)>),
}

impl IndexTuples {
    /// Anchor–positive and anchor–negative pairs, deduplicated and sorted.
    pub fn to_pairs(&self) -> (PairList, PairList) {
        match self {
            IndexTuples::Pairs {
                positives,
                negatives,
            } => {
                let p: BTreeSet<_> = positives.iter().copied().collect();
                let n: BTreeSet<_> = negatives.iter().copied().collect();
                (p.into_iter().collect(), n.into_iter().collect())
            }
            IndexTuples::Triplets(t) => {
                let p: BTreeSet<_> = t.iter().map(|&(a, p, _)| (a, p)).collect();
                let n: BTreeSet<_> = t.iter().map(|&(a, _, n)| (a, n)).collect();
                (p.into_iter().collect(), n.into_iter().collect())
            }
        }
    }

    /// Triplets; pairs are combined into every `(a, p, n)` whose two pairs share the anchor
    /// (PML `convert_to_triplets` semantics). Triplets are returned as they are, duplicates
    /// included (a sampling miner may pick a triplet twice; each pick counts).
    pub fn to_triplets(&self) -> Vec<(usize, usize, usize)> {
        match self {
            IndexTuples::Triplets(t) => t.clone(),
            IndexTuples::Pairs { .. } => {
                let (pos, neg) = self.to_pairs();
                let mut out = Vec::new();
                for &(a, p) in &pos {
                    for &(a2, n) in &neg {
                        if a2 == a {
                            out.push((a, p, n));
                        }
                    }
                }
                out
            }
        }
    }

    /// Number of tuples.
    pub fn len(&self) -> usize {
        match self {
            IndexTuples::Pairs {
                positives,
                negatives,
            } => positives.len() + negatives.len(),
            IndexTuples::Triplets(t) => t.len(),
        }
    }

    /// Whether no tuple was selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An online miner.
pub trait Miner {
    /// Short name used in configs and logs.
    fn name(&self) -> &'static str;
    /// Tuples of `batch` (raw embeddings, host copy) with the given labels (`batch.n` entries).
    fn mine(&self, batch: &HostBatch, labels: &[i64]) -> Result<IndexTuples, LossError>;
}

/// Checks the label count against the batch (every miner's first step).
pub(crate) fn check_labels(
    miner: &str,
    batch: &HostBatch,
    labels: &[i64],
) -> Result<(), LossError> {
    if labels.len() != batch.n {
        return Err(LossError::Invalid(format!(
            "{miner} miner: labels has {} entries but the batch has {} rows",
            labels.len(),
            batch.n
        )));
    }
    Ok(())
}

/// Every valid tuple: all `(a, p, n)` triplets with `a ≠ p`, same label for `a, p` and a
/// different label for `n` (PML `get_all_triplets_indices`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllTuples;

impl AllTuples {
    /// All positive and negative pairs (PML `get_all_pairs_indices`).
    pub fn pairs(labels: &[i64]) -> IndexTuples {
        let mut positives = Vec::new();
        let mut negatives = Vec::new();
        for (a, la) in labels.iter().enumerate() {
            for (b, lb) in labels.iter().enumerate() {
                if la == lb {
                    if a != b {
                        positives.push((a, b));
                    }
                } else {
                    negatives.push((a, b));
                }
            }
        }
        IndexTuples::Pairs {
            positives,
            negatives,
        }
    }
}

impl Miner for AllTuples {
    fn name(&self) -> &'static str {
        "all"
    }

    fn mine(&self, batch: &HostBatch, labels: &[i64]) -> Result<IndexTuples, LossError> {
        check_labels("all", batch, labels)?;
        Ok(IndexTuples::Triplets(Self::pairs(labels).to_triplets()))
    }
}

/// Which miner a loss uses, with its parameters. Deserialises from a bare name
/// (`"distance_weighted"`, `"batch_hard"`, `"multi_similarity"`, `"all"`) with default
/// parameters, or from a table tagged by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "MinerSpec")]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum MinerConfig {
    /// No mining: every valid pair / triplet.
    All,
    /// [`distance_weighted::DistanceWeightedMiner`].
    DistanceWeighted(distance_weighted::DistanceWeightedConfig),
    /// [`batch_hard::BatchHardMiner`].
    BatchHard,
    /// [`multi_similarity::MultiSimilarityMiner`].
    MultiSimilarity(multi_similarity::MultiSimilarityMinerConfig),
}

/// The two accepted spellings of a [`MinerConfig`].
#[derive(Deserialize)]
#[serde(untagged)]
enum MinerSpec {
    Name(MinerName),
    Table(MinerTable),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum MinerName {
    All,
    DistanceWeighted,
    BatchHard,
    MultiSimilarity,
}

#[derive(Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
enum MinerTable {
    All,
    DistanceWeighted(distance_weighted::DistanceWeightedConfig),
    BatchHard,
    MultiSimilarity(multi_similarity::MultiSimilarityMinerConfig),
}

impl From<MinerSpec> for MinerConfig {
    fn from(spec: MinerSpec) -> Self {
        match spec {
            MinerSpec::Name(MinerName::All) | MinerSpec::Table(MinerTable::All) => MinerConfig::All,
            MinerSpec::Name(MinerName::DistanceWeighted) => {
                MinerConfig::DistanceWeighted(Default::default())
            }
            MinerSpec::Table(MinerTable::DistanceWeighted(c)) => MinerConfig::DistanceWeighted(c),
            MinerSpec::Name(MinerName::BatchHard) | MinerSpec::Table(MinerTable::BatchHard) => {
                MinerConfig::BatchHard
            }
            MinerSpec::Name(MinerName::MultiSimilarity) => {
                MinerConfig::MultiSimilarity(Default::default())
            }
            MinerSpec::Table(MinerTable::MultiSimilarity(c)) => MinerConfig::MultiSimilarity(c),
        }
    }
}

impl MinerConfig {
    /// Builds the miner, checking its parameters.
    pub fn init(&self) -> Result<AnyMiner, LossError> {
        Ok(match self {
            MinerConfig::All => AnyMiner::All(AllTuples),
            MinerConfig::DistanceWeighted(c) => AnyMiner::DistanceWeighted(c.init()?),
            MinerConfig::BatchHard => AnyMiner::BatchHard(batch_hard::BatchHardMiner),
            MinerConfig::MultiSimilarity(c) => AnyMiner::MultiSimilarity(c.init()?),
        })
    }
}

/// Any of the miners.
#[derive(Debug, Clone)]
pub enum AnyMiner {
    /// [`AllTuples`].
    All(AllTuples),
    /// [`distance_weighted::DistanceWeightedMiner`].
    DistanceWeighted(distance_weighted::DistanceWeightedMiner),
    /// [`batch_hard::BatchHardMiner`].
    BatchHard(batch_hard::BatchHardMiner),
    /// [`multi_similarity::MultiSimilarityMiner`].
    MultiSimilarity(multi_similarity::MultiSimilarityMiner),
}

impl AnyMiner {
    /// Whether this is the no-op [`AllTuples`] miner (losses then use their dense all-pairs path).
    pub fn is_all(&self) -> bool {
        matches!(self, AnyMiner::All(_))
    }
}

impl Miner for AnyMiner {
    fn name(&self) -> &'static str {
        match self {
            AnyMiner::All(m) => m.name(),
            AnyMiner::DistanceWeighted(m) => m.name(),
            AnyMiner::BatchHard(m) => m.name(),
            AnyMiner::MultiSimilarity(m) => m.name(),
        }
    }

    fn mine(&self, batch: &HostBatch, labels: &[i64]) -> Result<IndexTuples, LossError> {
        match self {
            AnyMiner::All(m) => m.mine(batch, labels),
            AnyMiner::DistanceWeighted(m) => m.mine(batch, labels),
            AnyMiner::BatchHard(m) => m.mine(batch, labels),
            AnyMiner::MultiSimilarity(m) => m.mine(batch, labels),
        }
    }
}
