//! The HNSW graph (usearch), keyed by row position.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use simlearn_eval::{Matrix, Similarity};
use usearch::{IndexOptions, MetricKind, ScalarKind};

use crate::artifact::Storage;
use crate::IndexError;

/// HNSW parameters, recorded in the manifest. Names follow the HNSW paper / faiss:
/// `m` = neighbours per node (faiss `M`, usearch `connectivity`), `ef_construction`, `ef_search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node and layer (faiss `M`).
    pub m: usize,
    /// Candidate-list size while inserting (faiss `efConstruction`).
    pub ef_construction: usize,
    /// Candidate-list size while searching (faiss `efSearch`); raised to the number of
    /// candidates asked for when that is larger.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 32,
            ef_construction: 200,
            ef_search: 128,
        }
    }
}

impl HnswParams {
    /// Checks the parameters are usable.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.m < 2 || self.m > 512 {
            return Err(IndexError::Invalid(format!(
                "hnsw m = {} must be between 2 and 512",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(IndexError::Invalid(
                "hnsw ef_construction and ef_search must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// An HNSW graph over the rows of a vector matrix; row `i` has key `i`.
///
/// usearch keeps one search context per thread it was sized for and fails a call that finds
/// none free; a service runs searches on many more threads than that (tokio's blocking pool).
/// So every call into the graph first takes one of [`Graph::contexts`] slots, waiting when all
/// are taken: concurrent callers queue instead of failing.
pub struct Graph {
    inner: usearch::Index,
    /// Cosine graphs see unit vectors.
    normalise: bool,
    /// Free usearch thread contexts.
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    contexts: usize,
}

/// Holds one usearch thread context for the duration of a call.
struct Slot<'a>(&'a Graph);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

fn options(dim: usize, similarity: Similarity, storage: Storage, p: &HnswParams) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: match similarity {
            // Rows and queries are normalised on the way in (see `Graph::unit`), so the inner
            // product is the cosine, at one dot product per distance instead of three sums.
            // usearch's int8 quantiser is made for its cosine metric, so int8 keeps it.
            Similarity::Cosine if storage != Storage::I8 => MetricKind::IP,
            Similarity::Cosine => MetricKind::Cos,
            Similarity::Dot => MetricKind::IP,
            Similarity::SqEuclidean => MetricKind::L2sq,
        },
        quantization: match storage {
            Storage::F32 => ScalarKind::F32,
            Storage::F16 => ScalarKind::F16,
            Storage::I8 => ScalarKind::I8,
        },
        connectivity: p.m,
        expansion_add: p.ef_construction,
        expansion_search: p.ef_search,
        multi: false,
    }
}

/// For f32 graphs under the inner product (cosine and dot), replaces usearch's distance with
/// ours, `1 − a·b` on an f32 FMA dot product: usearch's own f32 kernel (NumKong) accumulates in
/// f64, which on AVX2 spends about half the build and search time converting (perf: 76–81% of
/// both in `nk_dot_f32_haswell`). The graph only proposes candidates, re-scored exactly, so
/// the f32 sum's rounding cannot change a returned score.
fn own_metric(
    inner: &mut usearch::Index,
    dim: usize,
    similarity: Similarity,
    storage: Storage,
) -> Result<(), IndexError> {
    if storage != Storage::F32 || similarity == Similarity::SqEuclidean {
        return Ok(());
    }
    let metric = Box::new(move |a: *const f32, b: *const f32| -> f32 {
        // SAFETY: usearch calls the metric with two vectors of the index's `dim` f32s.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, dim),
                std::slice::from_raw_parts(b, dim),
            )
        };
        1.0 - crate::scan::dot(a, b)
    });
    <f32 as usearch::VectorType>::change_metric(inner, metric).map_err(ffi)
}

fn ffi(e: impl std::fmt::Display) -> IndexError {
    IndexError::Invalid(format!("hnsw: {e}"))
}

impl Graph {
    /// An empty graph.
    pub fn new(
        dim: usize,
        similarity: Similarity,
        storage: Storage,
        params: &HnswParams,
    ) -> Result<Self, IndexError> {
        params.validate()?;
        let mut inner =
            usearch::Index::new(&options(dim, similarity, storage, params)).map_err(ffi)?;
        own_metric(&mut inner, dim, similarity, storage)?;
        // As many contexts as threads can compute at once here (rayon's pool or the CPUs).
        let contexts = rayon::current_num_threads()
            .max(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        inner
            .reserve_capacity_and_threads(0, contexts)
            .map_err(ffi)?;
        Ok(Self {
            inner,
            normalise: similarity == Similarity::Cosine,
            free: std::sync::Mutex::new(contexts),
            freed: std::sync::Condvar::new(),
            contexts,
        })
    }

    /// `v` scaled to unit length for a cosine graph (a zero vector stays zero), else as is.
    fn unit<'a>(&self, v: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        if !self.normalise {
            return std::borrow::Cow::Borrowed(v);
        }
        let norm = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return std::borrow::Cow::Borrowed(v);
        }
        let inv = (1.0 / norm) as f32;
        std::borrow::Cow::Owned(v.iter().map(|&x| x * inv).collect())
    }

    /// Waits for a free usearch thread context.
    fn slot(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }

    /// Calls into usearch that may run at once.
    pub fn contexts(&self) -> usize {
        self.contexts
    }

    /// Rows in the graph.
    pub fn len(&self) -> usize {
        self.inner.size()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts rows `first..first + rows` of `vectors` (keys = positions), on the rayon pool.
    /// `progress(done)` is called from the worker threads.
    pub fn insert(
        &self,
        vectors: &Matrix,
        first: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(), IndexError> {
        let n = vectors.rows();
        self.inner
            .reserve_capacity_and_threads(first + n, self.contexts)
            .map_err(ffi)?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        (0..n).into_par_iter().try_for_each(|i| {
            let _slot = self.slot();
            self.inner
                .add((first + i) as u64, &self.unit(vectors.row(i)))
                .map_err(ffi)?;
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if d.is_multiple_of(1024) || d == n {
                progress(d);
            }
            Ok(())
        })
    }

    /// Up to `count` candidate positions for `query`, nearest first by the graph's metric.
    /// The candidate list is `max(ef_search, count)` long (usearch's rule).
    pub fn candidates(&self, query: &[f32], count: usize) -> Result<Vec<usize>, IndexError> {
        let _slot = self.slot();
        let m = self
            .inner
            .search(&self.unit(query), count.min(self.len()))
            .map_err(ffi)?;
        Ok(m.keys.into_iter().map(|k| k as usize).collect())
    }

    /// Sets the search candidate-list size.
    pub fn set_ef(&self, ef: usize) {
        self.inner.change_expansion_search(ef.max(1));
    }

    /// The serialised graph.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let mut buf = vec![0u8; self.inner.serialized_length()];
        self.inner.save_to_buffer(&mut buf).map_err(ffi)?;
        Ok(buf)
    }

    /// A graph read back from [`Graph::to_bytes`] with the options it was made with.
    pub fn from_bytes(
        bytes: &[u8],
        dim: usize,
        similarity: Similarity,
        storage: Storage,
        params: &HnswParams,
    ) -> Result<Self, IndexError> {
        let mut g = Self::new(dim, similarity, storage, params)?;
        g.inner.load_from_buffer(bytes).map_err(ffi)?;
        // Loading restores the file's metric kind; put our distance back.
        own_metric(&mut g.inner, dim, similarity, storage)?;
        // Loading sizes the contexts from the file; size them for this machine again.
        g.inner
            .reserve_capacity_and_threads(g.inner.size(), g.contexts)
            .map_err(ffi)?;
        // load restores the options stored in the file; the manifest's ef_search wins.
        g.set_ef(params.ef_search);
        Ok(g)
    }

    /// Bytes of memory the graph uses (usearch's own count).
    pub fn memory_usage(&self) -> usize {
        self.inner.memory_usage()
    }
}
