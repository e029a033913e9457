//! Hierarchical batches, two super-classes per batch: the `HierarchicalSamplerBalanced` of
//! Liao et al. (2023) for SOP and iNaturalist, spec `contextual-loss.md` §3.2.

use super::{
    check_max_batches, draw_from_class, group_classes, rng_for, tag, BatchSampler, Class,
    SamplerError,
};
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Options of [`HierarchicalSampler`]. [`Default`] is the SOP setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HierarchicalOptions {
    /// "Batches per super pair", `bpsp` (reference: 10).
    pub batches_per_super_pair: usize,
    /// Per-dataset multiplier (reference: 66 for SOP, the default; 70 for iNaturalist).
    pub multiplier: usize,
    /// Cap on batches per epoch, applied after the shuffle (reference P224: `84480 / bs`, 660
    /// at bs 128; P256: none). Default `None`.
    pub max_batches: Option<usize>,
    /// Drop classes with a single sample instead of failing. Default `false`.
    pub skip_singletons: bool,
}

impl Default for HierarchicalOptions {
    fn default() -> Self {
        Self::sop()
    }
}

impl HierarchicalOptions {
    /// Stanford Online Products (spec §3.2): bpsp 10, multiplier 66 (655 batches at bs 128).
    pub fn sop() -> Self {
        Self {
            batches_per_super_pair: 10,
            multiplier: 66,
            max_batches: None,
            skip_singletons: false,
        }
    }

    /// iNaturalist (spec §3.2): bpsp 10, multiplier 70 (576 batches at bs 256).
    pub fn inat() -> Self {
        Self {
            multiplier: 70,
            ..Self::sop()
        }
    }
}

/// Batches made of two half-batches from two different super-classes.
///
/// With `half = batch_size / 2`, `cph = half / m` class draws per half-batch, `N_s` the samples
/// of super-class `s` and `N` their total, super-class `s` yields
/// `H_s = round(N_s / N · bpsp · multiplier · 2)` half-batches per epoch (`round` halves to
/// even, as Python's `round` in the reference). Each epoch:
/// 1. for each `s`, `H_s · cph` class draws: concatenated random permutations of `s`'s classes
///    (whole permutations, then a prefix of one more), cut into half-batches of `cph` draws,
///    each draw adding `m` samples of its class;
/// 2. half-batches are paired round-robin: `s1` walks the super-classes cyclically, pairing its
///    next half-batch with the next one of every other non-empty `s2` in index order, until
///    fewer than two super-classes have half-batches left (leftovers are dropped); a batch is
///    `s1`'s half followed by `s2`'s half;
/// 3. batches are shuffled, then cut to `max_batches`.
///
/// The pairing depends only on the `H_s`, so the batch count is fixed
/// ([`HierarchicalSampler::batches_per_epoch`]). The reference P256 code rebuilds the sampler
/// every epoch, which is what this does; P224 keeps one draw and only reshuffles it.
///
/// Super-labels may be any integers (the reference needs `0..S`): they are mapped to `0..S` in
/// ascending order. When a permutation wraps around inside a half-batch, a class can be drawn
/// twice there (`2m` samples, possibly repeated images, as in the reference); classes with fewer
/// than `m` samples are drawn with replacement.
#[derive(Debug, Clone)]
pub struct HierarchicalSampler {
    classes: Vec<Class>,
    /// Class indices (into `classes`) of each super-class, `0..S`.
    supers: Vec<Vec<usize>>,
    super_labels: Vec<i64>,
    halves: Vec<usize>,
    schedule: Vec<(usize, usize)>,
    batch_size: usize,
    m: usize,
    seed: u64,
    max_batches: Option<usize>,
}

impl HierarchicalSampler {
    /// Samples per class used by Liao et al. (2023) (spec §3).
    pub const DEFAULT_M: usize = 4;

    /// Builds the sampler: `labels` are the classes, `super_labels` the super-class of each
    /// sample (every sample of a class must share one super-label).
    ///
    /// Errors when `m < 1`, `batch_size` is odd or `batch_size / 2` is not a multiple of `m`,
    /// the two label slices differ in length, a class spans two super-labels, a class has a
    /// single sample (unless `skip_singletons`), `batches_per_super_pair`, `multiplier` or
    /// `max_batches` is 0, or fewer than two super-classes get half-batches.
    pub fn new(
        labels: &[i64],
        super_labels: &[i64],
        batch_size: usize,
        m: usize,
        seed: u64,
        opts: HierarchicalOptions,
    ) -> Result<Self, SamplerError> {
        if m < 1 {
            return Err(SamplerError::new(
                "m",
                "samples per class must be at least 1, got 0",
            ));
        }
        if batch_size == 0 || !batch_size.is_multiple_of(2) {
            return Err(SamplerError::new(
                "batch_size",
                format!("{batch_size} must be positive and even (two half-batches)"),
            ));
        }
        if !(batch_size / 2).is_multiple_of(m) {
            return Err(SamplerError::new(
                "batch_size",
                format!(
                    "half-batch {} (batch_size {batch_size} / 2) is not a multiple of m = {m}",
                    batch_size / 2
                ),
            ));
        }
        if super_labels.len() != labels.len() {
            return Err(SamplerError::new(
                "super_labels",
                format!(
                    "{} super-labels for {} labels",
                    super_labels.len(),
                    labels.len()
                ),
            ));
        }
        if opts.batches_per_super_pair == 0 {
            return Err(SamplerError::new(
                "batches_per_super_pair",
                "must be at least 1",
            ));
        }
        if opts.multiplier == 0 {
            return Err(SamplerError::new("multiplier", "must be at least 1"));
        }
        check_max_batches(opts.max_batches)?;
        let classes = group_classes(labels, opts.skip_singletons)?;

        let mut by_super: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (ci, class) in classes.iter().enumerate() {
            let first = class.indices[0];
            let s = super_labels[first];
            if let Some(&row) = class.indices.iter().find(|&&i| super_labels[i] != s) {
                return Err(SamplerError::new(
                    "super_labels",
                    format!(
                        "class {} has super-label {s} at row {first} but {} at row {row}",
                        class.label, super_labels[row]
                    ),
                ));
            }
            by_super.entry(s).or_default().push(ci);
        }
        let super_labels_sorted: Vec<i64> = by_super.keys().copied().collect();
        let supers: Vec<Vec<usize>> = by_super.into_values().collect();
        if supers.len() < 2 {
            return Err(SamplerError::new(
                "super_labels",
                format!("{} super-class(es); a batch needs two", supers.len()),
            ));
        }

        let n_total: usize = classes.iter().map(|c| c.indices.len()).sum();
        let scale = (opts.batches_per_super_pair * opts.multiplier * 2) as f64;
        let halves: Vec<usize> = supers
            .iter()
            .map(|cs| {
                let n_s: usize = cs.iter().map(|&c| classes[c].indices.len()).sum();
                (n_s as f64 / n_total as f64 * scale).round_ties_even() as usize
            })
            .collect();
        if halves.iter().filter(|&&h| h > 0).count() < 2 {
            return Err(SamplerError::new(
                "super_labels",
                format!(
                    "only {} super-class(es) get half-batches (H_s = {halves:?}); raise \
                     batches_per_super_pair or multiplier",
                    halves.iter().filter(|&&h| h > 0).count()
                ),
            ));
        }
        let schedule = pair_schedule(&halves);
        Ok(Self {
            classes,
            supers,
            super_labels: super_labels_sorted,
            halves,
            schedule,
            batch_size,
            m,
            seed,
            max_batches: opts.max_batches,
        })
    }

    /// Half-batches per super-class, `H_s`, in ascending super-label order.
    pub fn half_batches_per_super(&self) -> &[usize] {
        &self.halves
    }

    /// The distinct super-labels, ascending (position `s` is super-class `s` of
    /// [`Self::half_batches_per_super`]).
    pub fn super_labels(&self) -> &[i64] {
        &self.super_labels
    }

    /// Batches per epoch: the number of round-robin pairs, capped by `max_batches`.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.schedule.len();
        self.max_batches.map_or(n, |cap| n.min(cap))
    }
}

/// The round-robin pairing of spec §3.2 step 4, on half-batch counts: the `(s1, s2)` of each
/// emitted batch, in emission order.
fn pair_schedule(halves: &[usize]) -> Vec<(usize, usize)> {
    let s_count = halves.len();
    let mut left = halves.to_vec();
    let mut pairs = Vec::new();
    let mut s1 = 0;
    while left.iter().filter(|&&h| h > 0).count() >= 2 {
        for s2 in (0..s_count).filter(|&s2| s2 != s1) {
            if left[s1] == 0 {
                break;
            }
            if left[s2] > 0 {
                left[s1] -= 1;
                left[s2] -= 1;
                pairs.push((s1, s2));
            }
        }
        s1 = (s1 + 1) % s_count;
    }
    pairs
}

impl BatchSampler for HierarchicalSampler {
    fn epoch(&mut self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = rng_for(self.seed, epoch, tag::HIERARCHICAL, 0);
        let half = self.batch_size / 2;
        let cph = half / self.m;
        let mut halves: Vec<Vec<Vec<usize>>> = Vec::with_capacity(self.supers.len());
        for (classes, &h) in self.supers.iter().zip(&self.halves) {
            let need = h * cph;
            let mut draws = Vec::with_capacity(need);
            let mut perm = classes.clone();
            while draws.len() < need {
                perm.shuffle(&mut rng);
                let take = perm.len().min(need - draws.len());
                draws.extend_from_slice(&perm[..take]);
            }
            let list: Vec<Vec<usize>> = draws
                .chunks_exact(cph)
                .map(|chunk| {
                    let mut hb = Vec::with_capacity(half);
                    for &c in chunk {
                        draw_from_class(&self.classes[c].indices, self.m, &mut rng, &mut hb);
                    }
                    hb
                })
                .collect();
            halves.push(list);
        }
        let mut batches: Vec<Vec<usize>> = self
            .schedule
            .iter()
            .map(|&(s1, s2)| {
                // Both pops succeed: the schedule was built from these very counts.
                let mut batch = halves[s1].pop().unwrap_or_default();
                batch.extend(halves[s2].pop().unwrap_or_default());
                batch
            })
            .collect();
        batches.shuffle(&mut rng);
        batches.truncate(self.batches_per_epoch());
        batches
    }
}
