//! # simlearn-index
//!
//! A persistent embedding index and the HTTP service in front of it.
//!
//! * [`Index`]: vectors (f32, always kept for exact scores), ids, optional class labels and
//!   payload paths, an optional model reference (the files of the run that made the vectors,
//!   so image queries use the same network and preprocessing), an optional calibrated
//!   threshold, and a versioned manifest with the size and SHA-256 of every file. Saving writes
//!   a fresh folder next to the target and renames it into place, so a crash never leaves a
//!   half-written index; loading checks every checksum and refuses a corrupted file by name.
//! * Two kinds of search: [`Kind::Exact`] is the evaluation engine's exact kNN
//!   ([`simlearn_eval::knn`]: exact f64 top-k, ties by the lower position, the same code that
//!   measures R@k), and [`Kind::Hnsw`] is an HNSW graph whose candidates are re-scored exactly
//!   with the f32 vectors (so f16 / int8 graph storage only affects which candidates are found,
//!   never the scores returned).
//! * [`serve`]: the axum service (`POST /search`, `GET /items/{id}`, `GET /healthz`,
//!   `GET /metrics`, and a web page at `/`).
//!
//! ## Why usearch for HNSW
//!
//! [usearch](https://github.com/unum-cloud/USearch) (Apache-2.0, Unum) is actively released
//! (2.x), is the HNSW engine inside ClickHouse's vector index and DuckDB's `vss` extension,
//! stores the graph as one file that loads from a byte buffer (so the checksum we verify is of
//! exactly the bytes we load), supports f32 / f16 / int8 storage with cosine, inner-product and
//! L2 metrics, and adds and searches from many threads (so `index add` appends to a saved
//! graph). It builds offline from crates.io with the system C++ compiler (its headers are
//! vendored in the crate; `build.rs` downloads nothing). Of the pure-Rust crates, `hnsw_rs`
//! reloads a dump only as a value borrowing its loader object, which does not fit an index
//! that owns its graph, and `instant-distance` builds a graph in one batch only (no appends).
//!
//! ## Files
//!
//! `manifest.json` (format `simlearn-index`, version [`artifact::FORMAT_VERSION`]),
//! `vectors.npy` (`<f4`, n × d), `ids.npy` (`<i8`), `labels.npy` (`<i8`, optional),
//! `paths.txt` (one payload path per row, optional), `hnsw.usearch` (kind `hnsw`), `model/…`
//! (optional copy of the run folder's config and weights). NumPy can read every array.

pub mod ann;
pub mod artifact;
pub mod scan;
pub mod serve;

pub use ann::HnswParams;
pub use artifact::{BuildOptions, Hit, Index, Kind, Manifest, ModelRef, Storage, Threshold};

/// Every way building, loading or querying an index can fail; each message is one line that
/// names the file, row or parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A file of the index (or an input file) that is missing, unreadable or corrupt.
    #[error("{path}: {msg}")]
    File {
        /// The file at fault.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A bad argument or query (dimension, NaN, k out of range, unknown id).
    #[error("{0}")]
    Invalid(String),
    /// An error of the evaluation engine (shapes, non-finite values).
    #[error(transparent)]
    Eval(#[from] simlearn_eval::EvalError),
}

pub(crate) fn file_err(path: &std::path::Path, msg: impl std::fmt::Display) -> IndexError {
    IndexError::File {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}
