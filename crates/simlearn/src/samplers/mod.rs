//! Batch samplers: which dataset indices form each batch of an epoch.
//!
//! Class-labelled data (integer labels):
//! - [`MPerClassSampler`]: balanced m-per-class batches, the P256 `RandomSampler` of Liao et al.
//!   (2023) (spec `contextual-loss.md` §3.1), plus a "cover every class once" mode.
//! - [`HierarchicalSampler`]: two super-classes per batch, each filling half of it (§3.2).
//! - [`BalancedSampler`]: the P224 stream of class draws cut into batches (§3.3).
//!
//! Continuous (vector) labels:
//! - [`DenseTripletSampler`]: Dense Triplet Mining of Kim et al. (2019) (spec
//!   `log-ratio-loss.md` §3): one batch per anchor, its `k` nearest label neighbours plus random
//!   others, sorted by label distance.
//! - [`BinaryTripletSampler`]: the "Tri + Binary" batches (§4.2): positives from the anchor's
//!   nearest label neighbours, negatives from the rest.
//!
//! Every sampler is deterministic in `(seed, epoch)`: each epoch (and, for the dense samplers,
//! each batch) gets its own `ChaCha8Rng` keyed by the seed, the epoch and a per-use tag, so an
//! epoch can be regenerated alone, in any order, with the same result on every platform.

mod balanced;
mod dense_triplet;
mod hierarchical;
mod m_per_class;

pub use balanced::{BalancedOptions, BalancedSampler};
pub use dense_triplet::{BinaryBatch, BinaryTripletSampler, DenseBatch, DenseTripletSampler};
pub use hierarchical::{HierarchicalOptions, HierarchicalSampler};
pub use m_per_class::{MPerClassOptions, MPerClassSampler};

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Produces the batches of an epoch.
pub trait BatchSampler {
    /// The batches of epoch `epoch` (deterministic in (seed, epoch)); each batch is a list of
    /// dataset indices.
    fn epoch(&mut self, epoch: u64) -> Vec<Vec<usize>>;
}

/// Bad sampler input. Displays as one line, `"<param>: <reason>"`, naming the parameter at
/// fault (`labels`, `batch_size`, `m`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct SamplerError {
    /// The constructor parameter (or option field) at fault.
    pub param: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SamplerError {
    pub(crate) fn new(param: &'static str, reason: impl Into<String>) -> Self {
        Self {
            param,
            reason: reason.into(),
        }
    }
}

/// Tags that keep the random streams of different uses apart for one `(seed, epoch)`.
pub(crate) mod tag {
    pub const M_PER_CLASS: u64 = 1;
    pub const HIERARCHICAL: u64 = 2;
    pub const BALANCED: u64 = 3;
    pub const DENSE_ORDER: u64 = 4;
    pub const DENSE_BATCH: u64 = 5;
    pub const BINARY_ORDER: u64 = 6;
    pub const BINARY_BATCH: u64 = 7;
}

/// The generator for one use: the 32-byte ChaCha key is `seed ‖ epoch ‖ tag ‖ item`
/// (little-endian), so distinct uses never share a stream and nothing depends on call order.
pub(crate) fn rng_for(seed: u64, epoch: u64, tag: u64, item: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&tag.to_le_bytes());
    key[24..].copy_from_slice(&item.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// One class: its label and its dataset indices (ascending).
#[derive(Debug, Clone)]
pub(crate) struct Class {
    pub label: i64,
    pub indices: Vec<usize>,
}

/// Groups `labels` by value, classes in ascending label order. A class with a single sample
/// cannot form a positive pair: it is an error unless `skip_singletons`, which drops it.
pub(crate) fn group_classes(
    labels: &[i64],
    skip_singletons: bool,
) -> Result<Vec<Class>, SamplerError> {
    let mut map: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        map.entry(l).or_default().push(i);
    }
    let mut classes = Vec::with_capacity(map.len());
    for (label, indices) in map {
        if indices.len() == 1 {
            if skip_singletons {
                continue;
            }
            return Err(SamplerError::new(
                "labels",
                format!(
                    "class {label} has a single sample (row {}), which cannot form a positive \
                     pair; set skip_singletons to drop such classes",
                    indices[0]
                ),
            ));
        }
        classes.push(Class { label, indices });
    }
    Ok(classes)
}

/// Appends `m` random members of `class` to `out`: without replacement when the class has at
/// least `m` members, otherwise with replacement (the reference behaviour of Liao et al., spec
/// §3: a class of 2 or 3 images still contributes 4 entries, so the batch holds duplicates).
pub(crate) fn draw_from_class(
    class: &[usize],
    m: usize,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<usize>,
) {
    if class.len() >= m {
        out.extend(
            index::sample(rng, class.len(), m)
                .into_iter()
                .map(|i| class[i]),
        );
    } else {
        out.extend((0..m).map(|_| class[rng.random_range(0..class.len())]));
    }
}

/// Checks the options shared by every class sampler: `m ≥ 1`, `batch_size > 0` and a multiple
/// of `m`.
pub(crate) fn check_batch_shape(batch_size: usize, m: usize) -> Result<(), SamplerError> {
    if m < 1 {
        return Err(SamplerError::new(
            "m",
            "samples per class must be at least 1, got 0",
        ));
    }
    if batch_size == 0 || !batch_size.is_multiple_of(m) {
        return Err(SamplerError::new(
            "batch_size",
            format!("{batch_size} is not a positive multiple of m = {m}"),
        ));
    }
    Ok(())
}

/// Checks an optional cap on batches per epoch.
pub(crate) fn check_max_batches(max_batches: Option<usize>) -> Result<(), SamplerError> {
    if max_batches == Some(0) {
        return Err(SamplerError::new(
            "max_batches",
            "must be at least 1 when given (use None for no cap)",
        ));
    }
    Ok(())
}
