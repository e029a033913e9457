//! Balanced m-per-class batches: the P256 `RandomSampler` of Liao et al. (2023), spec
//! `contextual-loss.md` §3.1.

use super::{
    check_batch_shape, check_max_batches, draw_from_class, group_classes, rng_for, tag,
    BatchSampler, Class, SamplerError,
};
use rand::seq::{index, SliceRandom};

/// Options of [`MPerClassSampler`].
///
/// [`Default`] is one pass without a cap (`tries = 1`, `max_batches = None`), i.e.
/// `⌊C / cpb⌋` batches per epoch. The reference settings (spec §3.1) are
/// [`MPerClassOptions::cub`], [`MPerClassOptions::cars`] and [`MPerClassOptions::in_shop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MPerClassOptions {
    /// Passes over the epoch's class grouping, each with fresh images (reference: 5 for CUB,
    /// 10 for Cars and In-Shop). Default 1.
    pub tries: usize,
    /// Cap on batches per epoch (reference: 42 for CUB and Cars, 600 for In-Shop). Default
    /// `None` (no cap).
    pub max_batches: Option<usize>,
    /// Not in the reference: every pass covers every class once. With `C` classes and
    /// `cpb = batch_size / m` classes per batch, a pass has `⌈C / cpb⌉` batches over a fresh
    /// class permutation; when `cpb` does not divide `C` the last batch is completed with
    /// distinct classes drawn from the rest, so those appear twice. Default `false`.
    pub cover_all_classes: bool,
    /// Drop classes with a single sample instead of failing. Default `false`.
    pub skip_singletons: bool,
}

impl Default for MPerClassOptions {
    fn default() -> Self {
        Self {
            tries: 1,
            max_batches: None,
            cover_all_classes: false,
            skip_singletons: false,
        }
    }
}

impl MPerClassOptions {
    /// Reference CUB-200 setting (spec §3.1): 5 tries, cap 42 (15 batches per epoch at bs 128).
    pub fn cub() -> Self {
        Self {
            tries: 5,
            max_batches: Some(42),
            ..Self::default()
        }
    }

    /// Reference Cars-196 setting (spec §3.1): 10 tries, cap 42 (30 batches per epoch at bs 128).
    pub fn cars() -> Self {
        Self {
            tries: 10,
            max_batches: Some(42),
            ..Self::default()
        }
    }

    /// Reference In-Shop setting (spec §3.1): 10 tries, cap 600 (600 batches per epoch).
    pub fn in_shop() -> Self {
        Self {
            tries: 10,
            max_batches: Some(600),
            ..Self::default()
        }
    }
}

/// Batches of `batch_size / m` classes × `m` samples each.
///
/// Reference mode (spec §3.1), per epoch:
/// ```text
/// classes shuffled;  cpb = batch_size / m;  groups = ⌊C / cpb⌋ consecutive slices of cpb classes
/// repeat `tries` times: for each group, one batch = m random samples of each of its classes
///                       (fresh samples every try); stop once `max_batches` batches exist
/// shuffle the batches
/// ```
/// So the last `C mod cpb` shuffled classes are unused that epoch, and every try repeats the
/// same class groups. With [`MPerClassOptions::cover_all_classes`] each try instead walks a
/// fresh permutation of all classes (see there).
///
/// Within a batch the samples are grouped by class (`m` consecutive entries per class). A class
/// with at least `m` samples contributes `m` distinct ones; a class with `2 ≤ count < m` is
/// drawn with replacement (reference behaviour), so its batch holds duplicates. Classes are
/// distinct within a batch, hence a batch has no duplicate index when every class has ≥ `m`
/// samples.
#[derive(Debug, Clone)]
pub struct MPerClassSampler {
    classes: Vec<Class>,
    batch_size: usize,
    m: usize,
    seed: u64,
    opts: MPerClassOptions,
}

impl MPerClassSampler {
    /// Samples per class used by Liao et al. (2023) (spec §3).
    pub const DEFAULT_M: usize = 4;

    /// Builds the sampler over the dataset's `labels` (one per sample).
    ///
    /// Errors when `m < 1`, `batch_size` is not a positive multiple of `m`, `tries` or
    /// `max_batches` is 0, a class has a single sample (unless `skip_singletons`), or fewer than
    /// `batch_size / m` classes remain.
    pub fn new(
        labels: &[i64],
        batch_size: usize,
        m: usize,
        seed: u64,
        opts: MPerClassOptions,
    ) -> Result<Self, SamplerError> {
        check_batch_shape(batch_size, m)?;
        if opts.tries == 0 {
            return Err(SamplerError::new("tries", "must be at least 1"));
        }
        check_max_batches(opts.max_batches)?;
        let classes = group_classes(labels, opts.skip_singletons)?;
        let cpb = batch_size / m;
        if classes.len() < cpb {
            return Err(SamplerError::new(
                "labels",
                format!(
                    "{} usable classes, but batch_size {batch_size} / m {m} needs {cpb} per batch",
                    classes.len()
                ),
            ));
        }
        Ok(Self {
            classes,
            batch_size,
            m,
            seed,
            opts,
        })
    }

    /// Classes per batch, `batch_size / m`.
    pub fn classes_per_batch(&self) -> usize {
        self.batch_size / self.m
    }

    /// Number of usable classes (after dropping singletons, if asked).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The labels of the usable classes, ascending.
    pub fn class_labels(&self) -> Vec<i64> {
        self.classes.iter().map(|c| c.label).collect()
    }

    /// Batches per epoch: `min(groups · tries, max_batches)` with `groups = ⌊C / cpb⌋`
    /// (reference) or `⌈C / cpb⌉` (`cover_all_classes`).
    pub fn batches_per_epoch(&self) -> usize {
        let total = self.groups_per_try().saturating_mul(self.opts.tries);
        self.opts.max_batches.map_or(total, |cap| total.min(cap))
    }

    fn groups_per_try(&self) -> usize {
        let (c, cpb) = (self.classes.len(), self.classes_per_batch());
        if self.opts.cover_all_classes {
            c.div_ceil(cpb)
        } else {
            c / cpb
        }
    }

    /// The class groups (indices into `self.classes`) of one cover-all pass: a fresh
    /// permutation cut into slices of `cpb`, the last slice completed with distinct classes
    /// from outside it.
    fn cover_groups(&self, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<Vec<usize>> {
        let (c, cpb) = (self.classes.len(), self.classes_per_batch());
        let mut order: Vec<usize> = (0..c).collect();
        order.shuffle(rng);
        let mut groups: Vec<Vec<usize>> = order.chunks(cpb).map(<[usize]>::to_vec).collect();
        if let Some(last) = groups.last_mut() {
            let r = last.len();
            if r < cpb {
                // The classes outside the last slice are the first c − r of the permutation.
                let fill = index::sample(rng, c - r, cpb - r);
                last.extend(fill.into_iter().map(|i| order[i]));
            }
        }
        groups
    }
}

impl BatchSampler for MPerClassSampler {
    fn epoch(&mut self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = rng_for(self.seed, epoch, tag::M_PER_CLASS, 0);
        let cpb = self.classes_per_batch();
        let cap = self.batches_per_epoch();
        let mut batches = Vec::with_capacity(cap);
        let fixed_groups: Vec<Vec<usize>> = if self.opts.cover_all_classes {
            Vec::new()
        } else {
            let mut order: Vec<usize> = (0..self.classes.len()).collect();
            order.shuffle(&mut rng);
            order.chunks_exact(cpb).map(<[usize]>::to_vec).collect()
        };
        'tries: for _ in 0..self.opts.tries {
            let fresh;
            let groups = if self.opts.cover_all_classes {
                fresh = self.cover_groups(&mut rng);
                &fresh
            } else {
                &fixed_groups
            };
            for group in groups {
                if batches.len() == cap {
                    break 'tries;
                }
                let mut batch = Vec::with_capacity(self.batch_size);
                for &c in group {
                    draw_from_class(&self.classes[c].indices, self.m, &mut rng, &mut batch);
                }
                batches.push(batch);
            }
        }
        batches.shuffle(&mut rng);
        batches
    }
}
