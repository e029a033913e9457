//! # simlearn-eval
//!
//! Framework-free retrieval evaluation for metric learning:
//! `embeddings → index → neighbours → metrics`.

pub mod cluster;
pub mod continuous;
pub mod evaluate;
pub mod io;
pub mod knn;
pub mod label_distance;
pub mod matrix;
pub mod metrics;
pub mod report;
pub mod stats;
pub mod verification;

pub use evaluate::{
    compare_classes, compare_continuous, evaluate_classes, evaluate_continuous, ContinuousConfig,
    EvalConfig,
};
pub use knn::{knn, knn_leave_one_out, KnnConfig, Neighbours, Similarity};
pub use label_distance::LabelDistance;
pub use matrix::Matrix;
pub use metrics::MapAtKDivisor;
pub use report::{Averaging, ClassReport, ClassRow, Comparison, ContinuousReport, MetricValue};
pub use stats::{BootstrapConfig, PairedDifference};
pub use verification::{
    calibrate, verify, Calibration, CalibrationPoint, CalibrationRule, Verification,
    VerificationConfig,
};

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
