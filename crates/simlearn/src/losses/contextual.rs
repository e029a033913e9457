//! The contextual-similarity hybrid loss of Liao, Tsiligkaridis & Kulis, "Supervised Metric
//! Learning to Rank for Retrieval via Contextual Similarity Optimization", ICML 2023
//! (arXiv 2210.01908), following the authors' code as specified in `contextual-loss.md`
//! §1–§2 (equation numbers E1–E10 are the spec's).
//!
//! On a batch of `n` raw embeddings `z_i` with labels `y_i`:
//!
//! ```text
//! F = z / sqrt(‖z‖² + 1e-12)   (row-wise)      S = F Fᵀ      Y_ij = 1[y_i = y_j]
//! D = max(0, 2 − 2S)                                               squared distances
//! d⁽ᵏ⁾_i, d⁽ʰ⁾_i = k-th and h-th smallest value of row i of D, h = ⌊k/2⌋   (E1, detached,
//!                  the diagonal included: i is its own first neighbour, so k counts i)
//! A = H(ε − D, −d⁽ᵏ⁾)   B = H(ε − D, −d⁽ʰ⁾)                                  (E2, E3)
//! P = A Aᵀ ⊘row sg(a),  a = rowsum A;   Q = Ā Āᵀ ⊘row sg(ā),  Ā = 1 − A     (E4, E5)
//! W̃ = ½(P + Q) ⊙ A;   R = B ⊙ Bᵀ;   Ŵ = (R W̃) ⊘row r,  r = rowsum R (not detached)
//! W = ½(Ŵ + Ŵᵀ)                                                          (E6–E9)
//! L_ctx = Σ_{i≠j} (W_ij − Y_ij)² / n²                                         (E10)
//! L_con = count-normalised margin contrastive on S, m⁺ = 0.75, m⁻ = 0.6        (§2.2)
//! L_reg = (mean_{ij} S_ij − s̃)²                                               (§2.3)
//! ```
//!
//! `H(x, t)` is the straight-through step [`step_st`]: forward `1[x ≥ t]`, backward
//! `gain · upstream` with `gain = 10`; `ε` is in squared-distance units (a cosine margin of
//! `ε/2`). Thresholds are row *values* compared with `≥`, so every tied or ε-close point is in
//! the neighbourhood (never top-k indices, §9.3).
//!
//! Combination (§2.4):
//! - [`Convention::P256`] (paper and `main.py`): `L = λ·L_ctx + γ·L_reg + (1−λ−γ)·L_con`,
//!   defaults `λ = 0.4`, `γ = 0.1`, `s̃ = 0.25`.
//! - [`Convention::P224`] (`224x224/train.py`): `L = (1−λ′)·L_ctx + λ′·L_con + γ·L_reg`, where
//!   the field `lambda` is read as the *contrastive* weight `λ′` (0.05 CUB, 0.2 Cars/SOP) and
//!   the regulariser target default is `s̃ = 0.3`; see [`ContextualConfig::p224`].
//!
//! **Empty complement (§9.1).** When every batch point lies in `N(i)` (`ā_i = 0`: collapsed
//! embeddings, or `k` close to `n`), `Q`'s row `i` is `0/0` in the reference code and the NaN
//! spreads through `R W̃` to the whole loss (the authors' GradScaler then silently skips the
//! step). Here `Q_i· = 0` when `ā_i = 0`, as a constant (no gradient through that row): the
//! overlap of empty complements is taken as "no evidence". Then `W̃_ii = ½ P_ii = ½` instead of
//! 1; the loss and its gradient stay finite.
//!
//! Cost: a few `n × n × n` matrix products (`A Aᵀ`, `Ā Āᵀ`, `R W̃` and their backward), one
//! row sort of `D`, and `O(n²)` memory; no `n³` tensor is materialised (§9.17).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distances::{first_non_finite_row, l2_normalize, same_label_matrix, NORMALIZE_EPS};
use crate::losses::contextual_fused as fused;
use crate::losses::contrastive::{
    check_class_batch, check_class_shape, contrastive_on_similarity, non_finite_embeddings,
};
use crate::losses::{ClassLoss, LossError, LossOutput};
use crate::straight_through::{indicator, step_st};

/// How the three terms are weighted (spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// `L = λ·L_ctx + γ·L_reg + (1−λ−γ)·L_con` (paper figure and the 256×256 code path
    /// `main.py`, which produced the authors' sample logs).
    #[default]
    P256,
    /// `L = (1−λ′)·L_ctx + λ′·L_con + γ·L_reg` (the 224×224 code path `224x224/train.py`,
    /// whose `--lam` is the contrastive weight λ′; the weights sum to `1 + γ`).
    P224,
}

/// How the loss is evaluated. Both give the same values and the same straight-through
/// gradient (tested against each other and against the spec's worked example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kernel {
    /// One host pass over the sparse neighbourhood masks computing the three terms and
    /// `∂L/∂S` (`losses/contextual_fused.rs`); the graph sees `S` and one constant `n × n`
    /// gradient. `O(n²·k)` instead of `O(n³)`. Falls back to [`Kernel::Graph`] when the
    /// neighbourhoods cover more than an eighth of the pairs of a batch of 64 or more. The
    /// returned terms are values for logging (no gradient of their own); `total` carries it.
    #[default]
    Fused,
    /// The equations as burn tensor operations (dense `n × n` matrix products), every term
    /// differentiable on its own; the reference the fused kernel is tested against, and the
    /// faster choice on a GPU at large `n`, where the fused kernel reads `S` back to the host.
    Graph,
}

/// Configuration of [`ContextualLoss`]. Every default is the authors' P256 setting
/// (`contextual-loss.md` §2.4), used for all five datasets of their sample logs (§6.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextualConfig {
    /// Neighbourhood size `k`, counting the point itself (so `k = 4` means 3 others).
    /// Default 4 = samples per class (hard-coded in P256, `--IPC` in P224). Needs `2 ≤ k < n`.
    pub k: usize,
    /// Neighbourhood margin `ε` in squared-distance units. Default 0.05 (P224 CUB uses 0.04).
    pub eps: f64,
    /// Straight-through gain `g` of the Heaviside backward. Default 10 (§1.3).
    pub gain: f64,
    /// P256: weight `λ` of the contextual term, default 0.4. P224: weight `λ′` of the
    /// contrastive term (0.05 CUB, 0.2 Cars/SOP).
    pub lambda: f64,
    /// Weight `γ` of the similarity regulariser. Default 0.1 (both code paths).
    pub gamma: f64,
    /// Positive margin `m⁺` of the contrastive term. Default 0.75 (§2.2, both code paths).
    pub pos_margin: f64,
    /// Negative margin `m⁻` of the contrastive term. Default 0.6 (§2.2).
    pub neg_margin: f64,
    /// Regulariser target `s̃` for the mean cosine similarity. Default 0.25 (P256
    /// `--reg_sim`); P224's default is 0.3 (`--regsim`).
    pub sim_target: f64,
    /// Weighting convention. Default [`Convention::P256`]. Switching it does not change
    /// `lambda` or `sim_target`; [`ContextualConfig::p224`] sets all three.
    pub convention: Convention,
    /// Evaluation strategy (not a parameter of the loss). Default [`Kernel::Fused`].
    pub kernel: Kernel,
}

impl Default for ContextualConfig {
    fn default() -> Self {
        Self {
            k: 4,
            eps: 0.05,
            gain: 10.0,
            lambda: 0.4,
            gamma: 0.1,
            pos_margin: 0.75,
            neg_margin: 0.6,
            sim_target: 0.25,
            convention: Convention::P256,
            kernel: Kernel::Fused,
        }
    }
}

impl ContextualConfig {
    /// The P224 setting (§2.4) with contrastive weight `lambda_contrastive` (λ′: 0.05 CUB,
    /// 0.2 Cars and SOP) and margin `eps` (0.04 CUB, 0.05 Cars and SOP); `s̃ = 0.3`; the other
    /// fields keep their defaults (k 4, gain 10, γ 0.1, m⁺ 0.75, m⁻ 0.6).
    pub fn p224(lambda_contrastive: f64, eps: f64) -> Self {
        Self {
            eps,
            lambda: lambda_contrastive,
            sim_target: 0.3,
            convention: Convention::P224,
            ..Self::default()
        }
    }

    /// Checks the parameters that do not depend on the batch and builds the loss.
    pub fn init(&self) -> Result<ContextualLoss, LossError> {
        let bad = |what: String| Err(LossError::Invalid(format!("contextual: {what}")));
        if self.k < 2 {
            return bad(format!(
                "k = {} must be at least 2 (h = ⌊k/2⌋ must be ≥ 1)",
                self.k
            ));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("eps = {} must be finite and ≥ 0", self.eps));
        }
        if !(self.gain.is_finite() && self.gain > 0.0) {
            return bad(format!("gain = {} must be finite and > 0", self.gain));
        }
        if !(self.lambda.is_finite() && (0.0..=1.0).contains(&self.lambda)) {
            return bad(format!("lambda = {} must be in [0, 1]", self.lambda));
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return bad(format!("gamma = {} must be finite and ≥ 0", self.gamma));
        }
        if self.convention == Convention::P256 && self.lambda + self.gamma > 1.0 {
            return bad(format!(
                "lambda + gamma = {} exceeds 1, so the contrastive weight 1 − λ − γ is negative",
                self.lambda + self.gamma
            ));
        }
        for (name, value) in [
            ("pos_margin", self.pos_margin),
            ("neg_margin", self.neg_margin),
            ("sim_target", self.sim_target),
        ] {
            if !(value.is_finite() && (-1.0..=1.0).contains(&value)) {
                return bad(format!("{name} = {value} must be a cosine in [-1, 1]"));
            }
        }
        Ok(ContextualLoss {
            config: self.clone(),
        })
    }

    /// Weights `(w_ctx, w_con, w_reg)` of the three terms under the configured convention.
    pub fn weights(&self) -> (f64, f64, f64) {
        match self.convention {
            Convention::P256 => (self.lambda, 1.0 - self.lambda - self.gamma, self.gamma),
            Convention::P224 => (1.0 - self.lambda, self.lambda, self.gamma),
        }
    }
}

/// The contextual hybrid loss (see the module documentation). Build it with
/// [`ContextualConfig::init`].
#[derive(Debug, Clone)]
pub struct ContextualLoss {
    config: ContextualConfig,
}

impl ContextualLoss {
    /// The configuration this loss was built from.
    pub fn config(&self) -> &ContextualConfig {
        &self.config
    }

    /// The loss on a precomputed cosine-similarity matrix `s` (`n × n`, `S = F Fᵀ` of unit
    /// rows). [`ClassLoss::forward`] normalises the embeddings and calls this; it is public so
    /// that `∂L/∂S` can be checked against the explicit backward of spec §1.5.
    pub fn forward_similarity(
        &self,
        s: Tensor<2>,
        labels: &[i64],
    ) -> Result<LossOutput, LossError> {
        let [n, m] = s.dims();
        if n != m {
            return Err(LossError::Invalid(format!(
                "contextual: similarity matrix is {n} × {m}, not square"
            )));
        }
        self.check_batch_size(n)?;
        if labels.len() != n {
            return Err(LossError::Invalid(format!(
                "contextual: labels has {} entries but the batch has {n} rows",
                labels.len()
            )));
        }
        if self.config.kernel == Kernel::Fused {
            if let Some(out) = self.forward_fused(&s, labels, FusedInput::Similarity)? {
                return Ok(out);
            }
        } else if let Some(row) = first_non_finite_row(&s) {
            return Err(non_finite_row(row));
        }
        self.forward_graph(s, labels)
    }

    /// The graph form on a validated `S`.
    fn forward_graph(&self, s: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let cfg = &self.config;
        let same = same_label_matrix(labels, &s.device(), s.dtype());
        let w = contextual_similarity(s.clone(), cfg.k, cfg.eps, cfg.gain)?;
        let ctx = contextual_term(w, same.clone());
        let con = contrastive_on_similarity(s.clone(), same, cfg.pos_margin, cfg.neg_margin);
        let reg = s.mean().sub_scalar(cfg.sim_target).square();
        let (w_ctx, w_con, w_reg) = cfg.weights();
        let total = ctx.clone().mul_scalar(w_ctx)
            + con.clone().mul_scalar(w_con)
            + reg.clone().mul_scalar(w_reg);
        Ok(LossOutput {
            total,
            terms: vec![
                ("contextual", ctx),
                ("contrastive", con),
                ("regulariser", reg),
            ],
        })
    }

    /// [`Kernel::Fused`] on `x` (`S`, or the raw embeddings): `None` when the neighbourhoods
    /// are too dense (the caller then runs the graph form).
    fn forward_fused(
        &self,
        x: &Tensor<2>,
        labels: &[i64],
        input: FusedInput,
    ) -> Result<Option<LossOutput>, LossError> {
        if x.dtype() == burn::tensor::DType::F64 {
            self.forward_fused_as::<f64>(x, labels, input)
        } else {
            self.forward_fused_as::<f32>(x, labels, input)
        }
    }

    fn forward_fused_as<T: fused::HostFloat + burn::tensor::Element>(
        &self,
        x: &Tensor<2>,
        labels: &[i64],
        input: FusedInput,
    ) -> Result<Option<LossOutput>, LossError> {
        let [n, d] = x.dims();
        let host =
            x.clone().detach().try_into_vec_as::<T>().map_err(|e| {
                LossError::Invalid(format!("contextual: cannot read the batch: {e:?}"))
            })?;
        if let Some(e) = host.iter().position(|v| !v.as_f64().is_finite()) {
            return Err(match input {
                FusedInput::Similarity => non_finite_row(e / d),
                FusedInput::Embeddings => non_finite_embeddings("contextual", e / d),
            });
        }
        let cfg = &self.config;
        let (w_ctx, w_con, w_reg) = cfg.weights();
        let params = fused::Params {
            k: cfg.k,
            eps: cfg.eps,
            gain: cfg.gain,
            pos_margin: cfg.pos_margin,
            neg_margin: cfg.neg_margin,
            sim_target: cfg.sim_target,
            w_ctx,
            w_con,
            w_reg,
        };
        let out = match input {
            FusedInput::Similarity => fused::hybrid(&host, n, labels, params),
            FusedInput::Embeddings => {
                fused::hybrid_from_embeddings(&host, n, d, labels, NORMALIZE_EPS, params)
            }
        };
        let Some(out) = out else {
            return Ok(None);
        };
        let device = x.device();
        let dtype = x.dtype();
        let scalar =
            |v: f64| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), (&device, dtype));
        let g = Tensor::<2>::from_data(TensorData::new(out.grad, [n, d]), (&device, dtype));
        // ⟨x, G⟩ − sg(⟨x, G⟩) is exactly 0 forward and has gradient G.
        let linear = (x.clone() * g).sum();
        let total = linear.clone() - linear.detach() + scalar(out.total);
        Ok(Some(LossOutput {
            total,
            terms: vec![
                ("contextual", scalar(out.ctx)),
                ("contrastive", scalar(out.con)),
                ("regulariser", scalar(out.reg)),
            ],
        }))
    }

    fn check_batch_size(&self, n: usize) -> Result<(), LossError> {
        let k = self.config.k;
        if k >= n {
            return Err(LossError::Invalid(format!(
                "contextual: k = {k} must be smaller than the batch size n = {n} \
                 (with k ≥ n every neighbourhood is the whole batch)"
            )));
        }
        Ok(())
    }
}

impl ClassLoss for ContextualLoss {
    fn name(&self) -> &'static str {
        "contextual"
    }

    fn forward(&self, embeddings: Tensor<2>, labels: &[i64]) -> Result<LossOutput, LossError> {
        let fused = self.config.kernel == Kernel::Fused;
        let n = if fused {
            // Finiteness is checked on the host copy the kernel reads anyway.
            let [n, d] = embeddings.dims();
            check_class_shape("contextual", n, d, labels)?;
            n
        } else {
            check_class_batch("contextual", &embeddings, labels)?.0
        };
        self.check_batch_size(n)?;
        if fused {
            if let Some(out) = self.forward_fused(&embeddings, labels, FusedInput::Embeddings)? {
                return Ok(out);
            }
        }
        let f = l2_normalize(embeddings, NORMALIZE_EPS);
        let s = f.clone().matmul(f.transpose());
        if fused {
            // Dense neighbourhoods: S is already validated, so go straight to the graph form.
            return self.forward_graph(s, labels);
        }
        self.forward_similarity(s, labels)
    }
}

/// What the fused kernel is handed.
#[derive(Clone, Copy)]
enum FusedInput {
    /// The cosine matrix `S` (gradient with respect to `S`).
    Similarity,
    /// Raw embeddings (normalised, multiplied and differentiated on the host).
    Embeddings,
}

fn non_finite_row(row: usize) -> LossError {
    LossError::Invalid(format!(
        "contextual: similarity row {row} contains NaN or infinity"
    ))
}

/// The contextual similarity `W` (E1–E9) of a cosine-similarity matrix `s` (`n × n`), with
/// neighbourhood size `k` (self included, `2 ≤ k ≤ n`, else an error naming `k` and `n`),
/// margin `eps` (squared-distance units) and straight-through gain `gain`. `W ∈ [0, 1]`,
/// symmetric.
///
/// Gradient flow as in §1.4: thresholds, `|N(i)|` and `|N̄(i)|` are detached; the masks carry
/// `gain ×` the upstream gradient; `|R(i)|` is differentiable.
pub fn contextual_similarity(
    s: Tensor<2>,
    k: usize,
    eps: f64,
    gain: f64,
) -> Result<Tensor<2>, LossError> {
    let [n, m] = s.dims();
    if n != m || k < 2 || k > n {
        return Err(LossError::Invalid(format!(
            "contextual similarity: need a square matrix and 2 ≤ k ≤ n, got {n} × {m} and k = {k}"
        )));
    }
    let dtype = s.dtype();
    let h = k / 2;
    // D = max(0, 2 − 2S); clamp_min passes the gradient where 2 − 2S ≥ 0 (inclusive), as in
    // the reference `clamp(min=0)`.
    let d = s.mul_scalar(-2.0).add_scalar(2.0).clamp_min(0.0);
    let sorted = d.clone().detach().sort(1);
    let d_k = sorted.clone().narrow(1, k - 1, 1); // n × 1
    let d_h = sorted.narrow(1, h - 1, 1);
    let x = d.neg().add_scalar(eps); // ε − D
    let a = step_st(x.clone(), d_k.neg(), gain);
    let b = step_st(x, d_h.neg(), gain);

    let a_rows = a.clone().sum_dim(1); // Σ_k A_ik, differentiable
    let a_count = a_rows.clone().detach(); // |N(i)| ≥ 1 (i is in its own set)
    let a_bar_count = a_count.clone().neg().add_scalar(n as f64); // |N̄(i)| = n − |N(i)|
    let overlap = a.clone().matmul(a.clone().transpose()); // |N(i) ∩ N(j)|
                                                           // (1 − A)(1 − A)ᵀ = n − Σ_k A_ik − Σ_k A_jk + (A Aᵀ)_ij, the same function of A (so the same
                                                           // gradient) as the second n³ product the equations write, for O(n²) instead.
    let complement_overlap = overlap
        .clone()
        .sub(a_rows.clone())
        .sub(a_rows.transpose())
        .add_scalar(n as f64);
    let p = overlap / a_count;
    // §9.1 guard: rows with an empty complement get Q_i· = 0 (forward and backward).
    let has_complement = indicator(a_bar_count.clone().greater_elem(0.5), dtype);
    let q = complement_overlap / a_bar_count.clamp_min(1.0) * has_complement;
    let w_tilde = (p + q).mul_scalar(0.5) * a;

    let r = b.clone() * b.transpose();
    let r_count = r.clone().sum_dim(1); // ≥ 1 in the forward pass (R_ii = 1); not detached
    let w_hat = r.matmul(w_tilde) / r_count;
    Ok((w_hat.clone() + w_hat.transpose()).mul_scalar(0.5))
}

/// `L_ctx = Σ_{i≠j} (W_ij − Y_ij)² / n²` (E10): the diagonal is excluded from the sum but the
/// divisor is `n²`, as in the reference code.
pub fn contextual_term(w: Tensor<2>, same: Tensor<2>) -> Tensor<1> {
    let [n, _] = w.dims();
    let off_diagonal = Tensor::<2>::eye(n, &w.device())
        .cast(w.dtype())
        .neg()
        .add_scalar(1.0);
    ((w - same).square() * off_diagonal)
        .sum()
        .mul_scalar(1.0 / (n * n) as f64)
}
