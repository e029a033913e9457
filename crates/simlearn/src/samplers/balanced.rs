//! The P224 `BalancedSampler` of Liao et al. (2023) for CUB and Cars (`--IPC 4`), spec
//! `contextual-loss.md` §3.3.

use super::{
    check_batch_shape, draw_from_class, group_classes, rng_for, tag, BatchSampler, Class,
    SamplerError,
};
use rand::seq::{index, SliceRandom};
use rand_chacha::ChaCha8Rng;

/// Options of [`BalancedSampler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalancedOptions {
    /// Distinct classes drawn at a time (hard-coded to 96 in the reference; default 96).
    pub classes_per_draw: usize,
    /// Drop classes with a single sample instead of failing. Default `false`.
    pub skip_singletons: bool,
}

impl Default for BalancedOptions {
    fn default() -> Self {
        Self {
            classes_per_draw: 96,
            skip_singletons: false,
        }
    }
}

/// A stream of class draws cut into batches (P224, spec §3.3).
///
/// With `N` samples, `cpb = batch_size / m` and `D = classes_per_draw`, each epoch:
/// ```text
/// target = ⌊N / batch_size⌋;  every class starts with an empty pool of unused samples
/// while target > 0:
///     draw D distinct classes uniformly
///     for each: if its pool holds fewer than m samples, refill it with a fresh permutation
///               of the class; append m samples taken from the pool
///     target -= ⌊D / cpb⌋
/// cut the stream into consecutive batches of batch_size, dropping a short tail
/// ```
/// So an epoch has `⌊⌈target / ⌊D/cpb⌋⌉ · D · m / batch_size⌋` batches (CUB, bs 128: 45; Cars,
/// bs 64: 126). Within an epoch a class's samples are used without repetition until its pool
/// runs low; the few left in the pool at a refill are discarded (the reference does not say
/// which; discarding keeps every take of `m` free of repeats). A class with fewer than `m`
/// samples is drawn with replacement. When `cpb` divides `D` each batch holds `cpb` distinct
/// classes × `m` samples; otherwise a class's samples can be split across two batches, and a
/// batch spanning two draws can hold one class twice (reference behaviour).
#[derive(Debug, Clone)]
pub struct BalancedSampler {
    classes: Vec<Class>,
    n_samples: usize,
    batch_size: usize,
    m: usize,
    seed: u64,
    classes_per_draw: usize,
}

impl BalancedSampler {
    /// Images per class, `--IPC`, used by Liao et al. (2023) (spec §3.3).
    pub const DEFAULT_M: usize = 4;

    /// Builds the sampler over the dataset's `labels` (one per sample).
    ///
    /// Errors when `m < 1`, `batch_size` is not a positive multiple of `m`, `classes_per_draw`
    /// is smaller than `batch_size / m` (no batch would ever complete), a class has a single
    /// sample (unless `skip_singletons`), there are fewer classes than `classes_per_draw`, or
    /// fewer samples than `batch_size`.
    pub fn new(
        labels: &[i64],
        batch_size: usize,
        m: usize,
        seed: u64,
        opts: BalancedOptions,
    ) -> Result<Self, SamplerError> {
        check_batch_shape(batch_size, m)?;
        let cpb = batch_size / m;
        if opts.classes_per_draw < cpb {
            return Err(SamplerError::new(
                "classes_per_draw",
                format!(
                    "{} is below the {cpb} classes of one batch (batch_size {batch_size} / m {m})",
                    opts.classes_per_draw
                ),
            ));
        }
        let classes = group_classes(labels, opts.skip_singletons)?;
        if classes.len() < opts.classes_per_draw {
            return Err(SamplerError::new(
                "labels",
                format!(
                    "{} usable classes, fewer than classes_per_draw = {}",
                    classes.len(),
                    opts.classes_per_draw
                ),
            ));
        }
        let n_samples: usize = classes.iter().map(|c| c.indices.len()).sum();
        if n_samples < batch_size {
            return Err(SamplerError::new(
                "labels",
                format!("{n_samples} usable samples, fewer than batch_size = {batch_size}"),
            ));
        }
        Ok(Self {
            classes,
            n_samples,
            batch_size,
            m,
            seed,
            classes_per_draw: opts.classes_per_draw,
        })
    }

    /// Class draws per epoch, `⌈⌊N / batch_size⌋ / ⌊D / cpb⌋⌉`.
    fn draws_per_epoch(&self) -> usize {
        let target = self.n_samples / self.batch_size;
        let per_draw = self.classes_per_draw / (self.batch_size / self.m);
        target.div_ceil(per_draw)
    }

    /// Batches per epoch (see the type's documentation).
    pub fn batches_per_epoch(&self) -> usize {
        self.draws_per_epoch() * self.classes_per_draw * self.m / self.batch_size
    }

    fn take(&self, c: usize, pool: &mut Vec<usize>, rng: &mut ChaCha8Rng, out: &mut Vec<usize>) {
        let class = &self.classes[c].indices;
        if class.len() < self.m {
            draw_from_class(class, self.m, rng, out);
            return;
        }
        if pool.len() < self.m {
            pool.clear();
            pool.extend_from_slice(class);
            pool.shuffle(rng);
        }
        // The pool is a random permutation, so its tail is a uniformly random ordered subset.
        let start = pool.len() - self.m;
        out.extend(pool.drain(start..));
    }
}

impl BatchSampler for BalancedSampler {
    fn epoch(&mut self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = rng_for(self.seed, epoch, tag::BALANCED, 0);
        let mut pools: Vec<Vec<usize>> = vec![Vec::new(); self.classes.len()];
        let draws = self.draws_per_epoch();
        let mut stream = Vec::with_capacity(draws * self.classes_per_draw * self.m);
        for _ in 0..draws {
            let picked = index::sample(&mut rng, self.classes.len(), self.classes_per_draw);
            for c in picked {
                self.take(c, &mut pools[c], &mut rng, &mut stream);
            }
        }
        stream
            .chunks_exact(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }
}
