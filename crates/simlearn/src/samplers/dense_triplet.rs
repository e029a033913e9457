//! Batches for continuous labels: Dense Triplet Mining and binary-triplet batches of Kim et al.
//! (2019), spec `log-ratio-loss.md` §3 and §4.2.
//!
//! Both samplers visit every sample once per epoch as the anchor, in a shuffled order, and
//! rank the other samples by `(label distance to the anchor, index)`: ties are broken by the
//! smaller index, and the anchor is excluded **by index**, so exact label duplicates (distance
//! 0) remain eligible neighbours (spec §8.4). The ranking is computed per anchor in
//! `O(N · dl)` with a partial selection; no `N × N` matrix is stored.
//!
//! Batch `t` of epoch `e` has its own random generator keyed by `(seed, e, t)`, so any batch can
//! be rebuilt alone ([`DenseTripletSampler::dense_batch`]) and an epoch can be streamed
//! ([`DenseTripletSampler::dense_epoch_iter`]) instead of held in memory: a [`DenseBatch`]
//! carries `B²` label distances (90 kB at `B = 150`), so a whole MPII epoch (12,366 batches)
//! collected by [`DenseTripletSampler::dense_epoch`] takes about 1.1 GB.

use super::{check_max_batches, rng_for, tag, BatchSampler, SamplerError};
use rand::seq::{index, SliceRandom};
use rand_chacha::ChaCha8Rng;
use simlearn_eval::{LabelDistance, Matrix};
use std::cmp::Ordering;

/// One batch for a continuous-label loss.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseBatch {
    /// Dataset indices; `indices[0]` is the anchor, the rest ascend in label distance to it
    /// (ties by index).
    pub indices: Vec<usize>,
    /// Row-major `B × B` label distances between batch members (`B = indices.len()`):
    /// symmetric with a zero diagonal; row 0 holds the distances to the anchor.
    pub label_dist: Vec<f32>,
}

impl DenseBatch {
    /// Batch size `B`.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch is empty (never, for batches built by the samplers).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Label distance between batch members `i` and `j`.
    pub fn dist(&self, i: usize, j: usize) -> f32 {
        self.label_dist[i * self.indices.len() + j]
    }
}

/// A binary-triplet batch. Layout: row 0 is the anchor, rows `1..=positives` are the positives,
/// rows `positives + 1..B` are the negatives; positives and negatives each ascend in label
/// distance to the anchor (ties by index), and every positive ranks before every negative.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryBatch {
    /// The batch and its label distances.
    pub batch: DenseBatch,
    /// Number of positives `p`: rows `1..=p` of the batch.
    pub positives: usize,
}

/// `(distance to anchor, index)`, ordered by distance then index.
type Ranked = (f64, usize);

fn rank_cmp(a: &Ranked, b: &Ranked) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// Shared state of the two continuous-label samplers.
#[derive(Debug, Clone)]
struct LabelSpace {
    labels: Matrix,
    distance: LabelDistance,
}

impl LabelSpace {
    fn new(labels: &Matrix, distance: LabelDistance) -> Result<Self, SamplerError> {
        if labels.cols() == 0 {
            return Err(SamplerError::new("labels", "label vectors have 0 columns"));
        }
        if let Some(row) = labels.first_non_finite_row() {
            return Err(SamplerError::new(
                "labels",
                format!("row {row} holds a NaN or infinite value"),
            ));
        }
        if let LabelDistance::Circular { period } = distance {
            if !(period.is_finite() && period > 0.0) {
                return Err(SamplerError::new(
                    "distance",
                    format!("circular period must be finite and positive, got {period}"),
                ));
            }
        }
        Ok(Self {
            labels: labels.clone(),
            distance,
        })
    }

    fn n(&self) -> usize {
        self.labels.rows()
    }

    fn dist(&self, i: usize, j: usize) -> f64 {
        self.distance.dist(self.labels.row(i), self.labels.row(j))
    }

    /// Splits the samples other than `anchor` into its `k` nearest (sorted by rank) and the rest
    /// (in index order, so random draws from it do not depend on the selection algorithm).
    fn split(&self, anchor: usize, k: usize) -> (Vec<Ranked>, Vec<Ranked>) {
        let all: Vec<Ranked> = (0..self.n())
            .filter(|&j| j != anchor)
            .map(|j| (self.dist(anchor, j), j))
            .collect();
        if k == 0 {
            return (Vec::new(), all);
        }
        let mut sel = all.clone();
        sel.select_nth_unstable_by(k - 1, rank_cmp);
        let kth = sel[k - 1];
        sel.truncate(k);
        sel.sort_unstable_by(rank_cmp);
        let rest = all
            .into_iter()
            .filter(|r| rank_cmp(r, &kth) == Ordering::Greater)
            .collect();
        (sel, rest)
    }

    /// `amount` distinct members of `pool`, drawn uniformly.
    fn draw(pool: &[Ranked], amount: usize, rng: &mut ChaCha8Rng) -> Vec<Ranked> {
        index::sample(rng, pool.len(), amount)
            .into_iter()
            .map(|i| pool[i])
            .collect()
    }

    /// `[anchor] ++ members` with the `B × B` label-distance matrix.
    fn assemble(&self, anchor: usize, members: &[Ranked]) -> DenseBatch {
        let b = members.len() + 1;
        let mut indices = Vec::with_capacity(b);
        indices.push(anchor);
        indices.extend(members.iter().map(|r| r.1));
        let mut label_dist = vec![0f32; b * b];
        for (j, r) in members.iter().enumerate() {
            label_dist[j + 1] = r.0 as f32;
            label_dist[(j + 1) * b] = r.0 as f32;
        }
        // Upper triangle mirrored, so the matrix is exactly symmetric even for metrics whose
        // rounding is not (circular wrap-around).
        for i in 1..b {
            for j in i + 1..b {
                let d = self.dist(indices[i], indices[j]) as f32;
                label_dist[i * b + j] = d;
                label_dist[j * b + i] = d;
            }
        }
        DenseBatch {
            indices,
            label_dist,
        }
    }

    /// The anchors of an epoch: a permutation of `0..N`, cut to `max_batches`.
    /// One batch per anchor: `min(N, max_batches)`.
    fn batches_per_epoch(&self, max_batches: Option<usize>) -> usize {
        max_batches.map_or(self.n(), |cap| cap.min(self.n()))
    }

    fn anchors(&self, seed: u64, epoch: u64, tag: u64, max_batches: Option<usize>) -> Vec<usize> {
        let mut rng = rng_for(seed, epoch, tag, 0);
        let mut order: Vec<usize> = (0..self.n()).collect();
        order.shuffle(&mut rng);
        if let Some(cap) = max_batches {
            order.truncate(cap);
        }
        order
    }
}

/// Dense Triplet Mining (Kim et al. 2019, spec `log-ratio-loss.md` §3).
///
/// Per epoch, one batch per anchor in a shuffled order (`N` batches, or `max_batches`). The
/// batch of anchor `a` is
/// ```text
/// [a] ++ sort_by_rank( k nearest label neighbours of a  ∪  B − k − 1 distinct others drawn
///                      uniformly from the remaining N − 1 − k )
/// ```
/// where rank is `(label distance to a, index)` and `a` itself is excluded. Defaults from the
/// reference README: `B = 150`, `k = 5` (its code defaults are 130 and 5). Needs `N ≥ B`
/// (spec §8.10). Horizontal mirroring of the whole batch (spec §3.2 step 5) is augmentation and
/// is left to the data pipeline.
#[derive(Debug, Clone)]
pub struct DenseTripletSampler {
    space: LabelSpace,
    batch_size: usize,
    k: usize,
    seed: u64,
    max_batches: Option<usize>,
}

impl DenseTripletSampler {
    /// Batch size of the reference README, `B = 150`.
    pub const DEFAULT_BATCH_SIZE: usize = 150;
    /// Nearest neighbours per batch of the reference, `k = 5`.
    pub const DEFAULT_K: usize = 5;

    /// Builds the sampler over the `N × dl` label matrix.
    ///
    /// Errors when the labels have no column or a non-finite value (naming the row), the
    /// circular period is not finite and positive, `batch_size < 2`, `k ≥ batch_size`, or
    /// `N < batch_size`.
    pub fn new(
        labels: &Matrix,
        distance: LabelDistance,
        batch_size: usize,
        k: usize,
        seed: u64,
    ) -> Result<Self, SamplerError> {
        if batch_size < 2 {
            return Err(SamplerError::new(
                "batch_size",
                format!("{batch_size} leaves no room beside the anchor; need at least 2"),
            ));
        }
        if k >= batch_size {
            return Err(SamplerError::new(
                "k",
                format!("{k} neighbours do not fit beside the anchor in batch_size {batch_size}"),
            ));
        }
        let space = LabelSpace::new(labels, distance)?;
        if space.n() < batch_size {
            return Err(SamplerError::new(
                "batch_size",
                format!("{batch_size} exceeds the {} samples", space.n()),
            ));
        }
        Ok(Self {
            space,
            batch_size,
            k,
            seed,
            max_batches: None,
        })
    }

    /// Caps the batches per epoch (the first `max` anchors of the shuffled order). Errors when
    /// `max` is 0.
    pub fn with_max_batches(mut self, max: usize) -> Result<Self, SamplerError> {
        check_max_batches(Some(max))?;
        self.max_batches = Some(max);
        Ok(self)
    }

    /// Batches per epoch: `min(N, max_batches)`.
    pub fn batches_per_epoch(&self) -> usize {
        self.space.batches_per_epoch(self.max_batches)
    }

    /// The anchors of epoch `epoch`, in batch order.
    pub fn anchors(&self, epoch: u64) -> Vec<usize> {
        self.space
            .anchors(self.seed, epoch, tag::DENSE_ORDER, self.max_batches)
    }

    /// The ranked non-anchor members of batch `position` (anchor `anchor`) of `epoch`.
    fn members(&self, epoch: u64, position: usize, anchor: usize) -> Vec<Ranked> {
        let mut rng = rng_for(self.seed, epoch, tag::DENSE_BATCH, position as u64);
        let (mut members, rest) = self.space.split(anchor, self.k);
        members.extend(LabelSpace::draw(
            &rest,
            self.batch_size - self.k - 1,
            &mut rng,
        ));
        members.sort_unstable_by(rank_cmp);
        members
    }

    /// Batch `position` of epoch `epoch` (its anchor is `self.anchors(epoch)[position]`).
    /// Panics if `position ≥ batches_per_epoch()`.
    pub fn dense_batch(&self, epoch: u64, position: usize) -> DenseBatch {
        let anchor = self.anchors(epoch)[position];
        self.space
            .assemble(anchor, &self.members(epoch, position, anchor))
    }

    /// The batches of epoch `epoch`, built lazily one at a time.
    pub fn dense_epoch_iter(&self, epoch: u64) -> impl Iterator<Item = DenseBatch> + '_ {
        self.anchors(epoch)
            .into_iter()
            .enumerate()
            .map(move |(t, a)| self.space.assemble(a, &self.members(epoch, t, a)))
    }

    /// All batches of epoch `epoch` (see the module note on memory).
    pub fn dense_epoch(&mut self, epoch: u64) -> Vec<DenseBatch> {
        self.dense_epoch_iter(epoch).collect()
    }
}

impl BatchSampler for DenseTripletSampler {
    /// The same indices as [`DenseTripletSampler::dense_epoch`], without the distance matrices.
    fn epoch(&mut self, epoch: u64) -> Vec<Vec<usize>> {
        self.anchors(epoch)
            .into_iter()
            .enumerate()
            .map(|(t, a)| {
                let mut batch = vec![a];
                batch.extend(self.members(epoch, t, a).into_iter().map(|r| r.1));
                batch
            })
            .collect()
    }
}

/// Binary-triplet batches ("Tri + Binary", Kim et al. 2019, spec `log-ratio-loss.md` §4.2).
///
/// The anchor's `positive_pool` nearest label neighbours (rank as in [`DenseTripletSampler`])
/// are its positives, every other sample a negative. The batch of anchor `a` is
/// `[a] ++ p positives drawn without replacement from the pool ++ B − 1 − p negatives drawn
/// without replacement from the rest`, laid out as in [`BinaryBatch`]. Reference: `B = 150`,
/// `p = 5`, pool 30 (144 negatives). Needs `N ≥ positive_pool + B − p` so the negatives fit.
#[derive(Debug, Clone)]
pub struct BinaryTripletSampler {
    space: LabelSpace,
    batch_size: usize,
    positives: usize,
    positive_pool: usize,
    seed: u64,
    max_batches: Option<usize>,
}

impl BinaryTripletSampler {
    /// Batch size of the reference, `B = 150`.
    pub const DEFAULT_BATCH_SIZE: usize = 150;
    /// Positives per batch of the reference, 5.
    pub const DEFAULT_POSITIVES: usize = 5;
    /// Nearest label neighbours counted as positives in the reference, 30.
    pub const DEFAULT_POSITIVE_POOL: usize = 30;

    /// Builds the sampler over the `N × dl` label matrix.
    ///
    /// Errors on bad labels or circular period (as [`DenseTripletSampler::new`]), when
    /// `positives` is 0 or exceeds `positive_pool`, when no room is left for a negative
    /// (`batch_size ≤ positives + 1`), or when `N < positive_pool + batch_size − positives`.
    pub fn new(
        labels: &Matrix,
        distance: LabelDistance,
        batch_size: usize,
        positives: usize,
        positive_pool: usize,
        seed: u64,
    ) -> Result<Self, SamplerError> {
        if positives == 0 {
            return Err(SamplerError::new("positives", "must be at least 1"));
        }
        if positives > positive_pool {
            return Err(SamplerError::new(
                "positives",
                format!("{positives} exceeds positive_pool = {positive_pool}"),
            ));
        }
        if batch_size <= positives + 1 {
            return Err(SamplerError::new(
                "batch_size",
                format!(
                    "{batch_size} leaves no negative beside the anchor and {positives} positives"
                ),
            ));
        }
        let space = LabelSpace::new(labels, distance)?;
        let negatives = batch_size - 1 - positives;
        let need = positive_pool + 1 + negatives;
        if space.n() < need {
            return Err(SamplerError::new(
                "labels",
                format!(
                    "{} samples; positive_pool {positive_pool} + anchor + {negatives} negatives \
                     needs {need}",
                    space.n()
                ),
            ));
        }
        Ok(Self {
            space,
            batch_size,
            positives,
            positive_pool,
            seed,
            max_batches: None,
        })
    }

    /// Caps the batches per epoch (the first `max` anchors of the shuffled order). Errors when
    /// `max` is 0.
    pub fn with_max_batches(mut self, max: usize) -> Result<Self, SamplerError> {
        check_max_batches(Some(max))?;
        self.max_batches = Some(max);
        Ok(self)
    }

    /// Batches per epoch: `min(N, max_batches)`.
    pub fn batches_per_epoch(&self) -> usize {
        self.space.batches_per_epoch(self.max_batches)
    }

    /// The anchors of epoch `epoch`, in batch order.
    pub fn anchors(&self, epoch: u64) -> Vec<usize> {
        self.space
            .anchors(self.seed, epoch, tag::BINARY_ORDER, self.max_batches)
    }

    fn members(&self, epoch: u64, position: usize, anchor: usize) -> Vec<Ranked> {
        let mut rng = rng_for(self.seed, epoch, tag::BINARY_BATCH, position as u64);
        let (pool, rest) = self.space.split(anchor, self.positive_pool);
        let mut pos = LabelSpace::draw(&pool, self.positives, &mut rng);
        pos.sort_unstable_by(rank_cmp);
        let mut neg = LabelSpace::draw(&rest, self.batch_size - 1 - self.positives, &mut rng);
        neg.sort_unstable_by(rank_cmp);
        pos.extend(neg);
        pos
    }

    /// Batch `position` of epoch `epoch`. Panics if `position ≥ batches_per_epoch()`.
    pub fn binary_batch(&self, epoch: u64, position: usize) -> BinaryBatch {
        let anchor = self.anchors(epoch)[position];
        BinaryBatch {
            batch: self
                .space
                .assemble(anchor, &self.members(epoch, position, anchor)),
            positives: self.positives,
        }
    }

    /// The batches of epoch `epoch`, built lazily one at a time.
    pub fn binary_epoch_iter(&self, epoch: u64) -> impl Iterator<Item = BinaryBatch> + '_ {
        self.anchors(epoch)
            .into_iter()
            .enumerate()
            .map(move |(t, a)| BinaryBatch {
                batch: self.space.assemble(a, &self.members(epoch, t, a)),
                positives: self.positives,
            })
    }

    /// All batches of epoch `epoch` (memory as for [`DenseTripletSampler::dense_epoch`]).
    pub fn binary_epoch(&mut self, epoch: u64) -> Vec<BinaryBatch> {
        self.binary_epoch_iter(epoch).collect()
    }
}

impl BatchSampler for BinaryTripletSampler {
    /// The same indices as [`BinaryTripletSampler::binary_epoch`], without the distances.
    fn epoch(&mut self, epoch: u64) -> Vec<Vec<usize>> {
        self.anchors(epoch)
            .into_iter()
            .enumerate()
            .map(|(t, a)| {
                let mut batch = vec![a];
                batch.extend(self.members(epoch, t, a).into_iter().map(|r| r.1));
                batch
            })
            .collect()
    }
}
