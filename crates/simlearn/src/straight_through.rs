//! The straight-through step function shared by every loss that needs one.
//!
//! The contextual-similarity loss (Liao et al., ICML 2023; spec `contextual-loss.md` §1.3)
//! builds its neighbourhood masks with a Heaviside step whose backward pass is replaced by a
//! constant gain: forward `1[x ≥ t]` (ties give 1), backward `∂L/∂x = g · ∂L/∂out` with
//! `g = 10` in the authors' code. It is a straight-through estimator: the gradient does not
//! depend on `x` or `t`, so it also flows far from the threshold.
//!
//! burn has no per-op custom backward outside its backend-extension machinery, so the step is
//! written with the detach trick (`stack.md` §1(c), §6). Every loss calls [`step_st`]; none
//! re-derives it.

use burn::prelude::*;
use burn::tensor::FloatDType;

/// Straight-through step: forward `out = 1[x ≥ threshold]` (float 0/1, `≥` so ties give 1),
/// backward `∂L/∂x = gain · ∂L/∂out`; no gradient reaches `threshold`.
///
/// `threshold` is broadcast against `x` (e.g. an `n × 1` column of per-row thresholds against
/// an `n × n` matrix) and is detached here, so callers need not detach it themselves.
///
/// Built as `out = gain·(x − sg(x)) + sg(step(x))`, where `sg` is stop-gradient. This is the
/// same estimator as the textbook `x·c + sg(step(x) − x·c)`, but its forward value is exactly
/// 0 or 1: `x − sg(x)` is exactly zero, whereas `x·c + (s − x·c)` can round to `1 ± 1 ulp`,
/// which would leak into every product of masks downstream.
pub fn step_st<const D: usize>(x: Tensor<D>, threshold: Tensor<D>, gain: f64) -> Tensor<D> {
    let step = indicator(x.clone().greater_equal(threshold.detach()), x.dtype());
    let zero_with_gain = (x.clone() - x.detach()).mul_scalar(gain);
    zero_with_gain + step
}

/// A boolean mask as a float tensor of the given float `dtype` (`true → 1`, `false → 0`),
/// without gradient.
///
/// `Tensor::<_, Bool>::float()` produces the device's default float type; losses that may
/// run in f64 (the gradient checks do) need masks in the dtype of their inputs.
pub fn indicator<const D: usize>(mask: Tensor<D, Bool>, dtype: burn::tensor::DType) -> Tensor<D> {
    let dtype: FloatDType = dtype.into();
    mask.cast(dtype)
}
