//! # simlearn-eval
//!
//! Framework-free retrieval evaluation for metric learning:
//! `embeddings → index → neighbours → metrics`.

pub mod label_distance;
pub mod matrix;

pub use label_distance::LabelDistance;
pub use matrix::Matrix;

/// Every way evaluation input can be wrong; each message is one line that names the
/// file, row or parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Inconsistent shapes (rows, dimensions, label counts).
    #[error("{0}")]
    Shape(String),
    /// A value that cannot be used (NaN/Inf, bad parameter).
    #[error("{0}")]
    Invalid(String),
    /// A file that cannot be read or parsed.
    #[error("{path}: {msg}")]
    File {
        /// The file at fault.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
}
