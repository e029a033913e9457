//! `simlearn._native`: the PyO3 layer under the `simlearn` Python package.
//!
//! Everything here converts arguments, checks them with the CLI's wording (parameter names in
//! place of file names), releases the GIL and calls the Rust crates: retrieval evaluation and
//! kNN from `simlearn-eval`, the contextual and log-ratio losses (value and gradient) from
//! `simlearn`. Reports cross as the JSON that `simlearn eval --json` prints, so Python sees the
//! same names and values as the CLI.

use burn::prelude::*;
use burn::tensor::DType;
use numpy::ndarray::{Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use simlearn::losses::contextual::{ContextualConfig, ContextualLoss, Convention, Kernel};
use simlearn::losses::log_ratio::{
    AnchorMode, LogRatioConfig, LogRatioDistance, LogRatioLoss, TiePolicy, ZeroLabelPolicy,
};
use simlearn::losses::{ClassLoss, ContinuousLoss, LossError, LossOutput};
use simlearn_eval::{
    evaluate_classes, evaluate_continuous, knn, knn_leave_one_out, BootstrapConfig, ClassReport,
    ContinuousConfig, EvalConfig, KnnConfig, LabelDistance, MapAtKDivisor, Matrix, Similarity,
};

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A 2-D float32 or float64 numpy array, borrowed (no copy at the boundary).
enum Floats<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> Floats<'py> {
    fn extract(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
            return Ok(Self::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
            return Ok(Self::F64(a));
        }
        Err(value_error(format!(
            "{name} must be a 2-D float32 or float64 array"
        )))
    }

    fn view(&self) -> FloatView<'_> {
        match self {
            Self::F32(a) => FloatView::F32(a.as_array()),
            Self::F64(a) => FloatView::F64(a.as_array()),
        }
    }
}

/// A borrowed view that may cross into a GIL-free closure.
enum FloatView<'a> {
    F32(ArrayView2<'a, f32>),
    F64(ArrayView2<'a, f64>),
}

impl FloatView<'_> {
    /// Row-major f32 values: one copy (a `memcpy` for C-ordered f32), the only one the
    /// engine makes.
    fn to_matrix(&self) -> Matrix {
        let (rows, cols, data) = match self {
            Self::F32(v) => (
                v.nrows(),
                v.ncols(),
                v.as_slice()
                    .map_or_else(|| v.iter().copied().collect(), <[f32]>::to_vec),
            ),
            Self::F64(v) => (v.nrows(), v.ncols(), v.iter().map(|&x| x as f32).collect()),
        };
        Matrix::new(rows, cols, data).expect("rows × cols values")
    }
}

/// The CLI's input checks, worded as the CLI words them for files.
fn check_embeddings(m: &Matrix, name: &str) -> PyResult<()> {
    if m.rows() == 0 {
        return Err(value_error(format!("{name}: no rows")));
    }
    if m.cols() == 0 {
        return Err(value_error(format!(
            "{name}: rows have no values (dimension 0)"
        )));
    }
    if let Some(r) = m.first_non_finite_row() {
        return Err(value_error(format!(
            "{name}: row {r} contains NaN or Inf (or a value outside the f32 range)"
        )));
    }
    Ok(())
}

fn check_count(labels: &str, n: usize, emb: &str, rows: usize) -> PyResult<()> {
    if n != rows {
        return Err(value_error(format!(
            "count mismatch: {labels} holds {n} labels but {emb} has {rows} rows"
        )));
    }
    Ok(())
}

fn check_dims(q: &Matrix, q_name: &str, g: &Matrix, g_name: &str) -> PyResult<()> {
    if q.cols() != g.cols() {
        return Err(value_error(format!(
            "dimension mismatch: {q_name} has dimension {}, {g_name} has dimension {}",
            q.cols(),
            g.cols()
        )));
    }
    Ok(())
}

fn parse_similarity(s: &str) -> PyResult<Similarity> {
    Similarity::parse(s).map_err(|e| value_error(format!("similarity: {e}")))
}

fn parse_divisor(s: &str) -> PyResult<MapAtKDivisor> {
    match s {
        "min_k_r" => Ok(MapAtKDivisor::MinKR),
        "r" => Ok(MapAtKDivisor::R),
        "hits" => Ok(MapAtKDivisor::Hits),
        _ => Err(value_error(format!(
            "map_at_k_divisor: unknown {s:?}; expected min_k_r, r or hits"
        ))),
    }
}

/// `euclidean`, `manhattan` or `circular:PERIOD`, as `simlearn eval --label-distance`.
fn parse_label_distance(s: &str) -> PyResult<LabelDistance> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "euclidean" => return Ok(LabelDistance::Euclidean),
        "manhattan" => return Ok(LabelDistance::Manhattan),
        _ => {}
    }
    if let Some(p) = s.strip_prefix("circular:") {
        let period: f64 = p
            .trim()
            .parse()
            .map_err(|_| value_error(format!("label_distance: cannot parse period {p:?}")))?;
        if !(period.is_finite() && period > 0.0) {
            return Err(value_error(format!(
                "label_distance: the circular period must be positive and finite, got {period}"
            )));
        }
        return Ok(LabelDistance::Circular { period });
    }
    Err(value_error(format!(
        "label_distance: unknown {s:?}; expected euclidean, manhattan or circular:PERIOD"
    )))
}

/// Per-query values behind a class report: metric names, an `n_metrics × n_evaluated` matrix
/// and the query rows evaluated.
type PerQuery<'py> = (
    Vec<String>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray1<u64>>,
);

/// Class-label retrieval evaluation (`simlearn eval`), returning the `--json` report and,
/// when `per_query` is set, the per-query values behind it.
#[pyfunction]
#[pyo3(signature = (
    embeddings, labels, query, query_labels, *, ks, similarity, per_class, nmi, ci, seed,
    block_size, map_at_k_divisor, per_query, names
))]
#[allow(clippy::too_many_arguments)]
fn evaluate_classes_json<'py>(
    py: Python<'py>,
    embeddings: &Bound<'py, PyAny>,
    labels: PyReadonlyArray1<'py, i64>,
    query: Option<&Bound<'py, PyAny>>,
    query_labels: Option<PyReadonlyArray1<'py, i64>>,
    ks: Vec<usize>,
    similarity: &str,
    per_class: bool,
    nmi: bool,
    ci: bool,
    seed: u64,
    block_size: usize,
    map_at_k_divisor: &str,
    per_query: bool,
    names: (String, String, String, String),
) -> PyResult<(String, Option<PerQuery<'py>>)> {
    let (g_name, gl_name, q_name, ql_name) = names;
    if block_size == 0 {
        return Err(value_error("block_size must be at least 1"));
    }
    if query.is_some() != query_labels.is_some() {
        return Err(value_error(format!(
            "{q_name} and {ql_name} go together: give both or neither"
        )));
    }
    let cfg = EvalConfig {
        ks,
        similarity: parse_similarity(similarity)?,
        block_rows: block_size,
        per_class,
        nmi,
        bootstrap: ci.then_some(BootstrapConfig {
            seed,
            ..BootstrapConfig::default()
        }),
        seed,
        map_at_k_divisor: parse_divisor(map_at_k_divisor)?,
        ..EvalConfig::default()
    };
    let gallery = Floats::extract(embeddings, &g_name)?;
    let queries = query.map(|q| Floats::extract(q, &q_name)).transpose()?;
    let gl = labels.as_array();
    let ql = query_labels.as_ref().map(|l| l.as_array());
    let g_view = gallery.view();
    let q_view = queries.as_ref().map(Floats::view);
    let report: PyResult<ClassReport> = py.detach(|| {
        let g = g_view.to_matrix();
        check_embeddings(&g, &g_name)?;
        let g_labels: Vec<i64> = gl.iter().copied().collect();
        check_count(&gl_name, g_labels.len(), &g_name, g.rows())?;
        match (&q_view, &ql) {
            (Some(qv), Some(ql)) => {
                let q = qv.to_matrix();
                check_embeddings(&q, &q_name)?;
                check_dims(&q, &q_name, &g, &g_name)?;
                let q_labels: Vec<i64> = ql.iter().copied().collect();
                check_count(&ql_name, q_labels.len(), &q_name, q.rows())?;
                evaluate_classes(&q, &q_labels, Some((&g, &g_labels)), &cfg, None)
            }
            _ => evaluate_classes(&g, &g_labels, None, &cfg, None),
        }
        .map_err(value_error)
    });
    let report = report?;
    let json = serde_json::to_string(&report).map_err(value_error)?;
    let pq = per_query.then(|| {
        let names = report.per_query_names().to_vec();
        let n_eval = report.evaluated_queries().len();
        let mut values = Array2::<f64>::zeros((names.len(), n_eval));
        for (m, name) in names.iter().enumerate() {
            if let Some(v) = report.per_query(name) {
                values
                    .row_mut(m)
                    .assign(&numpy::ndarray::ArrayView1::from(v));
            }
        }
        let rows: Vec<u64> = report
            .evaluated_queries()
            .iter()
            .map(|&q| q as u64)
            .collect();
        (names, values.into_pyarray(py), rows.into_pyarray(py))
    });
    Ok((json, pq))
}

/// Continuous-label evaluation (`simlearn eval --continuous-labels`), returning the `--json`
/// report.
#[pyfunction]
#[pyo3(signature = (
    embeddings, labels, query, query_labels, *, ks, similarity, label_distance, ci, seed,
    block_size, names
))]
#[allow(clippy::too_many_arguments)]
fn evaluate_continuous_json<'py>(
    py: Python<'py>,
    embeddings: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: Option<&Bound<'py, PyAny>>,
    query_labels: Option<&Bound<'py, PyAny>>,
    ks: Option<Vec<usize>>,
    similarity: Option<&str>,
    label_distance: &str,
    ci: bool,
    seed: u64,
    block_size: usize,
    names: (String, String, String, String),
) -> PyResult<String> {
    let (g_name, gl_name, q_name, ql_name) = names;
    if block_size == 0 {
        return Err(value_error("block_size must be at least 1"));
    }
    if query.is_some() != query_labels.is_some() {
        return Err(value_error(format!(
            "{q_name} and {ql_name} go together: give both or neither"
        )));
    }
    let mut cfg = ContinuousConfig {
        label_distance: parse_label_distance(label_distance)?,
        block_rows: block_size,
        bootstrap: ci.then_some(BootstrapConfig {
            seed,
            ..BootstrapConfig::default()
        }),
        ..ContinuousConfig::default()
    };
    if let Some(s) = similarity {
        cfg.similarity = parse_similarity(s)?;
    }
    if let Some(ks) = ks {
        cfg.ndcg_ks = ks.clone();
        cfg.distance_ks = ks;
    }
    let g = Floats::extract(embeddings, &g_name)?;
    let gl = Floats::extract(labels, &gl_name)?;
    let q = query.map(|q| Floats::extract(q, &q_name)).transpose()?;
    let ql = query_labels
        .map(|l| Floats::extract(l, &ql_name))
        .transpose()?;
    let (gv, glv) = (g.view(), gl.view());
    let qv = q.as_ref().map(Floats::view);
    let qlv = ql.as_ref().map(Floats::view);
    let report = py.detach(|| -> PyResult<String> {
        let g = gv.to_matrix();
        check_embeddings(&g, &g_name)?;
        let gl = glv.to_matrix();
        check_embeddings(&gl, &gl_name)?;
        check_label_rows(&gl_name, gl.rows(), &g_name, g.rows())?;
        let report = match (&qv, &qlv) {
            (Some(qv), Some(qlv)) => {
                let q = qv.to_matrix();
                check_embeddings(&q, &q_name)?;
                check_dims(&q, &q_name, &g, &g_name)?;
                let ql = qlv.to_matrix();
                check_embeddings(&ql, &ql_name)?;
                check_label_rows(&ql_name, ql.rows(), &q_name, q.rows())?;
                if ql.cols() != gl.cols() {
                    return Err(value_error(format!(
                        "label dimension mismatch: {ql_name} has {} columns, {gl_name} has {}",
                        ql.cols(),
                        gl.cols()
                    )));
                }
                evaluate_continuous(&q, &ql, Some((&g, &gl)), &cfg, None)
            }
            _ => evaluate_continuous(&g, &gl, None, &cfg, None),
        }
        .map_err(value_error)?;
        serde_json::to_string(&report).map_err(value_error)
    })?;
    Ok(report)
}

fn check_label_rows(labels: &str, n: usize, emb: &str, rows: usize) -> PyResult<()> {
    if n != rows {
        return Err(value_error(format!(
            "count mismatch: {labels} holds {n} label rows but {emb} has {rows} rows"
        )));
    }
    Ok(())
}

/// `(indices, scores)` of a kNN search.
type KnnArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// Exact kNN: `(indices int64, scores float32)`, both `n_queries × k`, best first, ties by
/// the lower gallery index. `gallery = None` searches the queries among themselves, each
/// query excluded by index.
#[pyfunction]
#[pyo3(signature = (query, gallery, k, similarity, block_size, names))]
fn knn_search<'py>(
    py: Python<'py>,
    query: &Bound<'py, PyAny>,
    gallery: Option<&Bound<'py, PyAny>>,
    k: usize,
    similarity: &str,
    block_size: usize,
    names: (String, String),
) -> PyResult<KnnArrays<'py>> {
    let (q_name, g_name) = names;
    if block_size == 0 {
        return Err(value_error("block_size must be at least 1"));
    }
    let cfg = KnnConfig {
        k,
        similarity: parse_similarity(similarity)?,
        block_rows: block_size,
    };
    let q = Floats::extract(query, &q_name)?;
    let g = gallery.map(|g| Floats::extract(g, &g_name)).transpose()?;
    let qv = q.view();
    let gv = g.as_ref().map(Floats::view);
    let nb = py.detach(|| -> PyResult<_> {
        let q = qv.to_matrix();
        check_embeddings(&q, &q_name)?;
        match &gv {
            Some(gv) => {
                let g = gv.to_matrix();
                check_embeddings(&g, &g_name)?;
                check_dims(&q, &q_name, &g, &g_name)?;
                knn(&q, &g, &cfg, None)
            }
            None => knn_leave_one_out(&q, &cfg, None),
        }
        .map_err(value_error)
    })?;
    let rows = nb.n_queries();
    let idx: Vec<i64> = nb.indices.iter().map(|&i| i64::from(i)).collect();
    let idx = Array2::from_shape_vec((rows, nb.k), idx).map_err(value_error)?;
    let scores = Array2::from_shape_vec((rows, nb.k), nb.scores).map_err(value_error)?;
    Ok((idx.into_pyarray(py), scores.into_pyarray(py)))
}

/// The `n × n` matrix of distances between label vectors (rows of `labels`), as the
/// continuous-label losses take it.
#[pyfunction]
#[pyo3(signature = (labels, distance))]
fn label_distances<'py>(
    py: Python<'py>,
    labels: &Bound<'py, PyAny>,
    distance: &str,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let dist = parse_label_distance(distance)?;
    let l = Floats::extract(labels, "labels")?;
    let lv = l.view();
    let out = py.detach(|| -> PyResult<Array2<f32>> {
        let m = lv.to_matrix();
        check_embeddings(&m, "labels")?;
        let n = m.rows();
        Ok(Array2::from_shape_fn((n, n), |(i, j)| {
            dist.dist(m.row(i), m.row(j)) as f32
        }))
    })?;
    Ok(out.into_pyarray(py))
}

/// Loss value, named terms and `∂L/∂z` of one batch, by burn's autodiff on the flex (CPU)
/// backend in the input's precision.
struct Evaluated<T> {
    total: f64,
    terms: Vec<(&'static str, f64)>,
    grad: Vec<T>,
}

fn value_and_grad<T: burn::tensor::Element>(
    z: Vec<T>,
    n: usize,
    d: usize,
    dtype: DType,
    loss: impl FnOnce(Tensor<2>) -> Result<LossOutput, LossError>,
) -> Result<Evaluated<T>, String> {
    let device = Device::flex().autodiff();
    let leaf = Tensor::<2>::from_data(TensorData::new(z, [n, d]), (&device, dtype)).require_grad();
    let out = loss(leaf.clone()).map_err(|e| e.to_string())?;
    let terms = out
        .terms
        .iter()
        .map(|(name, t)| (*name, t.clone().into_scalar::<f64>()))
        .collect();
    let grads = out.total.backward();
    let total = out.total.into_scalar::<f64>();
    let grad = match leaf.grad(&grads) {
        Some(g) => g
            .try_into_vec_as::<T>()
            .map_err(|e| format!("cannot read the gradient back: {e:?}"))?,
        // No path from the input to the loss (e.g. no triplet survived): the gradient is 0.
        None => vec![T::from_elem(0.0); n * d],
    };
    Ok(Evaluated { total, terms, grad })
}

type LossResult<'py> = (f64, Vec<(&'static str, f64)>, Bound<'py, PyAny>);

/// Runs `loss` on the borrowed batch `z` (GIL released) and returns `(total, terms, grad)`,
/// the gradient as a numpy array of `z`'s dtype and shape.
fn run_loss<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    loss: impl Fn(Tensor<2>) -> Result<LossOutput, LossError> + Send + Sync,
) -> PyResult<LossResult<'py>> {
    let z = Floats::extract(z, "embeddings")?;
    let view = z.view();
    fn go<T: burn::tensor::Element + Copy>(
        v: &ArrayView2<'_, T>,
        dtype: DType,
        loss: &(dyn Fn(Tensor<2>) -> Result<LossOutput, LossError> + Send + Sync),
    ) -> Result<(Evaluated<T>, usize, usize), String> {
        let (n, d) = v.dim();
        let data: Vec<T> = v
            .as_slice()
            .map_or_else(|| v.iter().copied().collect(), <[T]>::to_vec);
        value_and_grad(data, n, d, dtype, loss).map(|e| (e, n, d))
    }
    match &view {
        FloatView::F32(v) => {
            let (e, n, d) = py
                .detach(|| go(v, DType::F32, &loss))
                .map_err(PyValueError::new_err)?;
            let g = Array2::from_shape_vec((n, d), e.grad).map_err(value_error)?;
            Ok((e.total, e.terms, g.into_pyarray(py).into_any()))
        }
        FloatView::F64(v) => {
            let (e, n, d) = py
                .detach(|| go(v, DType::F64, &loss))
                .map_err(PyValueError::new_err)?;
            let g = Array2::from_shape_vec((n, d), e.grad).map_err(value_error)?;
            Ok((e.total, e.terms, g.into_pyarray(py).into_any()))
        }
    }
}

/// The contextual-similarity hybrid loss (`simlearn::losses::contextual`), configured once.
#[pyclass(module = "simlearn._native", frozen)]
struct Contextual {
    loss: ContextualLoss,
}

#[pymethods]
impl Contextual {
    #[new]
    #[pyo3(signature = (
        *, k, eps, gain, lam, gamma, pos_margin, neg_margin, sim_target, convention, kernel
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        k: usize,
        eps: f64,
        gain: f64,
        lam: f64,
        gamma: f64,
        pos_margin: f64,
        neg_margin: f64,
        sim_target: f64,
        convention: &str,
        kernel: &str,
    ) -> PyResult<Self> {
        let convention = match convention {
            "p256" => Convention::P256,
            "p224" => Convention::P224,
            _ => {
                return Err(value_error(format!(
                    "contextual: convention {convention:?} must be p256 or p224"
                )))
            }
        };
        let kernel = match kernel {
            "fused" => Kernel::Fused,
            "graph" => Kernel::Graph,
            _ => {
                return Err(value_error(format!(
                    "contextual: kernel {kernel:?} must be fused or graph"
                )))
            }
        };
        let loss = ContextualConfig {
            k,
            eps,
            gain,
            lambda: lam,
            gamma,
            pos_margin,
            neg_margin,
            sim_target,
            convention,
            kernel,
        }
        .init()
        .map_err(value_error)?;
        Ok(Self { loss })
    }

    /// `(total, {term: value}, ∂total/∂embeddings)` of a batch of raw embeddings
    /// (`n × d`, float32 or float64) with integer class labels.
    fn forward_backward<'py>(
        &self,
        py: Python<'py>,
        embeddings: &Bound<'py, PyAny>,
        labels: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<LossResult<'py>> {
        let labels: Vec<i64> = labels.as_array().iter().copied().collect();
        run_loss(py, embeddings, |z| self.loss.forward(z, &labels))
    }
}

/// The log-ratio loss (`simlearn::losses::log_ratio`), configured once.
#[pyclass(module = "simlearn._native", frozen)]
struct LogRatio {
    loss: LogRatioLoss,
}

#[pymethods]
impl LogRatio {
    #[new]
    #[pyo3(signature = (*, distance, eps_in_per_dim, log_eps, anchors, ties, zero_label, zero_floor))]
    fn new(
        distance: &str,
        eps_in_per_dim: f64,
        log_eps: f64,
        anchors: &str,
        ties: Option<&str>,
        zero_label: &str,
        zero_floor: Option<f64>,
    ) -> PyResult<Self> {
        let distance = match distance {
            "plain" => LogRatioDistance::Plain,
            "squared" => LogRatioDistance::Squared,
            _ => {
                return Err(value_error(format!(
                    "log_ratio: distance {distance:?} must be plain or squared"
                )))
            }
        };
        let anchors = match anchors {
            "first" => AnchorMode::First,
            "all" => AnchorMode::All,
            _ => {
                return Err(value_error(format!(
                    "log_ratio: anchors {anchors:?} must be first or all"
                )))
            }
        };
        let ties = match ties {
            None => None,
            Some("include") => Some(TiePolicy::Include),
            Some("exclude") => Some(TiePolicy::Exclude),
            Some(t) => {
                return Err(value_error(format!(
                    "log_ratio: ties {t:?} must be include, exclude or None"
                )))
            }
        };
        let zero_label = match (zero_label, zero_floor) {
            ("log_eps", _) => ZeroLabelPolicy::LogEps,
            ("skip", _) => ZeroLabelPolicy::Skip,
            ("floor", Some(x)) => ZeroLabelPolicy::Floor(x),
            (z, _) => {
                return Err(value_error(format!(
                    "log_ratio: zero_label {z:?} must be \"log_eps\", \"skip\" or a positive float (floor)"
                )))
            }
        };
        let loss = LogRatioConfig {
            distance,
            eps_in_per_dim,
            log_eps,
            anchors,
            ties,
            zero_label,
        }
        .init()
        .map_err(value_error)?;
        Ok(Self { loss })
    }

    /// `(total, {}, ∂total/∂embeddings)` of a batch (`B × d`, float32 or float64) with its
    /// `B × B` label-distance matrix.
    fn forward_backward<'py>(
        &self,
        py: Python<'py>,
        embeddings: &Bound<'py, PyAny>,
        label_dist: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<LossResult<'py>> {
        let ld = label_dist.as_array();
        let (r, c) = ld.dim();
        if r != c {
            return Err(value_error(format!(
                "log_ratio: label_dist must be square (B × B), got {r} × {c}"
            )));
        }
        let ld: Vec<f32> = ld.iter().copied().collect();
        if let Some(e) = ld.iter().position(|v| !v.is_finite()) {
            return Err(value_error(format!(
                "log_ratio: label_dist row {} contains NaN or Inf",
                e / r.max(1)
            )));
        }
        run_loss(py, embeddings, |z| {
            let [b, _] = z.dims();
            if b != r {
                return Err(LossError::Invalid(format!(
                    "log_ratio: label_dist is {r} × {r} but the batch has {b} rows"
                )));
            }
            self.loss.forward(z, &ld)
        })
    }
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(evaluate_classes_json, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_continuous_json, m)?)?;
    m.add_function(wrap_pyfunction!(knn_search, m)?)?;
    m.add_function(wrap_pyfunction!(label_distances, m)?)?;
    m.add_class::<Contextual>()?;
    m.add_class::<LogRatio>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
