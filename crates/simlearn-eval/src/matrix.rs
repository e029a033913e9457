//! A dense row-major `f32` matrix: the one in-memory format for embeddings and vector labels.

use crate::EvalError;

/// Row-major `rows × cols` matrix of `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// Wraps `data` (length `rows * cols`, row-major).
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, EvalError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(EvalError::Shape(format!(
                "matrix of {rows} × {cols} needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    /// Builds a matrix from equal-length rows.
    pub fn from_rows(rows: &[Vec<f32>]) -> Result<Self, EvalError> {
        let cols = rows.first().map_or(0, Vec::len);
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != cols) {
            return Err(EvalError::Shape(format!(
                "row {i} has {} values, row 0 has {cols}",
                r.len()
            )));
        }
        Self::new(rows.len(), cols, rows.concat())
    }

    /// Number of rows (items).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The row-major values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable access to the row-major values.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, returning its values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The first row holding a NaN or infinite value, if any.
    pub fn first_non_finite_row(&self) -> Option<usize> {
        if self.cols == 0 {
            return None;
        }
        self.data
            .chunks_exact(self.cols)
            .position(|r| r.iter().any(|v| !v.is_finite()))
    }

    /// Copies the rows with the given indices into a new matrix.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Self {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    /// Scales every row to unit L2 norm (rows of norm 0 are left at 0).
    pub fn l2_normalize_rows(&mut self) {
        if self.cols == 0 {
            return;
        }
        for r in self.data.chunks_exact_mut(self.cols) {
            // f64 accumulation keeps 512-d norms exact to f32 rounding.
            let n = r
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            if n > 0.0 {
                let inv = (1.0 / n) as f32;
                r.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
}
