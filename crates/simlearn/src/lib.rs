//! # simlearn
//!
//! Deep metric learning to rank on [burn](https://burn.dev) `=0.22.1`.
//!
//! Data flows `dataset → sampler → batch → model → embeddings → loss`, one module per arrow:
//!
//! - [`data`]: feature and image datasets, the embedded scikit-learn digits set, class-disjoint splits.
//! - [`samplers`]: batch samplers (balanced m-per-class, hierarchical, dense triplet mining).
//! - [`models`]: embedding heads (linear / MLP, L2-normalised output).
//! - [`distances`]: similarity and distance matrices on embedding tensors.
//! - [`straight_through`]: the one shared straight-through step function (detach trick).
//! - [`losses`]: the contextual-similarity hybrid loss, the log-ratio loss and their baselines.
//! - [`miners`]: online tuple selection for the triplet and multi-similarity losses.
//! - [`train`]: the trainer (optimiser groups, schedule, evaluation, checkpoints, JSONL metrics).
//!
//! Evaluation (`embeddings → index → neighbours → metrics`) lives in the framework-free
//! [`simlearn_eval`] crate.

pub mod data;
pub mod distances;
pub mod losses;
pub mod miners;
pub mod models;
pub mod report;
pub mod samplers;
pub mod straight_through;
pub mod train;

pub use simlearn_eval as eval;
