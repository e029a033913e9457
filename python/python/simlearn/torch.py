"""The contextual-similarity and log-ratio losses as ``torch.nn.Module``\\ s backed by the Rust
kernels of the ``simlearn`` crate.

Each loss is a ``torch.autograd.Function`` whose forward hands the batch (read in place for
float32/float64 CPU tensors) to Rust with the GIL released; Rust returns the loss value and
its gradient with respect to the embeddings, computed together (the contextual loss by its
fused host kernel, which forms ``S = F Fᵀ``, the sparse neighbourhood products and ``∂L/∂z``
in one pass), and backward scales that gradient by the upstream one. Float32 and float64
tensors are computed in their own precision; float16/bfloat16 ones in float32.

Only CPU tensors are accepted: a CUDA tensor raises ``ValueError`` (move the batch with
``.cpu()``; the losses are cheap next to a forward pass of the backbone).

This module imports torch; ``import simlearn`` does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _native

__all__ = ["ContextualLoss", "LogRatioLoss"]


def _host_batch(embeddings: torch.Tensor, what: str) -> tuple[np.ndarray, torch.dtype]:
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"{what}: embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.device.type != "cpu":
        raise ValueError(
            f"{what}: the Rust kernel runs on CPU tensors; embeddings are on {embeddings.device} "
            "(move them with .cpu())"
        )
    if embeddings.dim() != 2:
        raise ValueError(f"{what}: embeddings must be 2-D (n, d), got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{what}: embeddings must be floating point, got {embeddings.dtype}")
    x = embeddings.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    return x.numpy(), embeddings.dtype


def _class_labels(labels: Any, what: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.dtype.kind not in "iub":
        raise ValueError(f"{what}: labels must be a 1-D integer tensor or array, got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


class _KernelFunction(torch.autograd.Function):
    """Value from the Rust kernel; gradient = upstream × the kernel's ∂L/∂z."""

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, kernel: Any, target: np.ndarray, what: str, sink: dict):
        z, dtype = _host_batch(embeddings, what)
        total, terms, grad = kernel.forward_backward(z, target)
        sink.clear()
        sink.update(terms)
        # The kernel returns ∂L/∂z with the value, so backward has nothing left to compute.
        ctx.grad = torch.from_numpy(grad).to(dtype)
        return torch.tensor(total, dtype=dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.to(ctx.grad.dtype) * ctx.grad, None, None, None, None


class ContextualLoss(torch.nn.Module):
    """The contextual-similarity hybrid loss of Liao, Tsiligkaridis & Kulis (ICML 2023), as in
    the authors' code (``contextual-loss.md``): on raw embeddings ``z`` (L2-normalised inside)
    with class labels ``y``,

    ``L = lam · L_ctx + gamma · L_reg + (1 − lam − gamma) · L_con`` (convention ``"p256"``,
    the default) or ``(1 − lam) · L_ctx + lam · L_con + gamma · L_reg`` (``"p224"``, where
    ``lam`` is the contrastive weight),

    with ``L_ctx`` the contextual term over the ``k``-neighbourhoods (self included, margin
    ``eps`` in squared-distance units, straight-through gain ``gain``), ``L_con`` the
    count-normalised margin contrastive loss on cosine similarity (``pos_margin``,
    ``neg_margin``) and ``L_reg = (mean S − sim_target)²``.

    ``forward(embeddings, labels)`` returns the scalar loss; the three unweighted terms of the
    last call are in ``last_terms`` (``contextual``, ``contrastive``, ``regulariser``).
    ``kernel="graph"`` evaluates the equations as a tensor graph instead of the fused kernel
    (same values and gradient). Bad parameters raise ``ValueError`` at construction; a batch
    with ``k ≥ n``, a label count that differs from the rows, or a NaN row raises
    ``ValueError`` in ``forward``.
    """

    def __init__(
        self,
        k: int = 4,
        eps: float = 0.05,
        lam: float = 0.4,
        gamma: float = 0.1,
        *,
        gain: float = 10.0,
        pos_margin: float = 0.75,
        neg_margin: float = 0.6,
        sim_target: float = 0.25,
        convention: str = "p256",
        kernel: str = "fused",
    ):
        super().__init__()
        self.k, self.eps, self.lam, self.gamma = k, eps, lam, gamma
        self.gain, self.pos_margin, self.neg_margin = gain, pos_margin, neg_margin
        self.sim_target, self.convention, self.kernel = sim_target, convention, kernel
        self._kernel = _native.Contextual(
            k=int(k),
            eps=float(eps),
            gain=float(gain),
            lam=float(lam),
            gamma=float(gamma),
            pos_margin=float(pos_margin),
            neg_margin=float(neg_margin),
            sim_target=float(sim_target),
            convention=convention,
            kernel=kernel,
        )
        self.last_terms: dict[str, float] = {}

    def forward(self, embeddings: torch.Tensor, labels: Any) -> torch.Tensor:
        labels = _class_labels(labels, "contextual")
        return _KernelFunction.apply(embeddings, self._kernel, labels, "contextual", self.last_terms)

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, eps={self.eps}, lam={self.lam}, gamma={self.gamma}, gain={self.gain}, "
            f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, "
            f"sim_target={self.sim_target}, convention={self.convention!r}, kernel={self.kernel!r}"
        )


class LogRatioLoss(torch.nn.Module):
    """The log-ratio loss of Kim, Seo, Laptev, Cho & Kwak (CVPR 2019), as in the authors' code
    (``log-ratio-loss.md``): for an anchor ``a`` and members ``i``, ``j``,
    ``ℓ = (ln(δ_ai/δ_aj) − ln(g_ai/g_aj))²`` with ``ln(· + log_eps)`` on both sides.

    Args:
        distance: ``"plain"`` (default, code: ``δ = sqrt(‖f_a − f_k‖² + eps_in)``, ``g`` as
            given) or ``"squared"`` (paper: squared distance and ``g²``).
        eps_in_per_dim: ``eps_in · d`` (default ``1e-4``, so ``eps_in = 1e-4 / d``).
        log_eps: added inside both logarithms (default ``1e-6``).
        anchors: ``"first"`` (default, code: row 0 is the one anchor, all pairs of the others)
            or ``"all"`` (batch-all).
        ties: ``"include"``, ``"exclude"`` or ``None`` (include for ``first``, exclude for
            ``all``).
        zero_label: ``"log_eps"`` (default, code), ``"skip"`` (drop members at label
            distance 0) or a positive float ``x`` (use ``max(g, x)``).

    ``forward(embeddings, label_dist)`` takes the ``B × B`` label-distance matrix of the batch
    (``simlearn.label_distances(labels)`` builds it from label vectors) and returns the scalar
    loss. No L2 normalisation (the loss is scale-invariant up to the ε terms).
    """

    def __init__(
        self,
        distance: str = "plain",
        eps_in_per_dim: float = 1e-4,
        log_eps: float = 1e-6,
        anchors: str = "first",
        ties: str | None = None,
        zero_label: str | float = "log_eps",
    ):
        super().__init__()
        self.distance, self.eps_in_per_dim, self.log_eps = distance, eps_in_per_dim, log_eps
        self.anchors, self.ties, self.zero_label = anchors, ties, zero_label
        if isinstance(zero_label, str):
            policy, floor = zero_label, None
        else:
            policy, floor = "floor", float(zero_label)
        self._kernel = _native.LogRatio(
            distance=distance,
            eps_in_per_dim=float(eps_in_per_dim),
            log_eps=float(log_eps),
            anchors=anchors,
            ties=ties,
            zero_label=policy,
            zero_floor=floor,
        )
        self.last_terms: dict[str, float] = {}

    def forward(self, embeddings: torch.Tensor, label_dist: Any) -> torch.Tensor:
        if isinstance(label_dist, torch.Tensor):
            label_dist = label_dist.detach().cpu().numpy()
        ld = np.asarray(label_dist)
        if ld.ndim != 2 or ld.dtype.kind not in "fiu":
            raise ValueError(f"log_ratio: label_dist must be a 2-D numeric B × B matrix, got {ld.dtype} {ld.shape}")
        ld = ld.astype(np.float32, copy=False)
        return _KernelFunction.apply(embeddings, self._kernel, ld, "log_ratio", self.last_terms)

    def extra_repr(self) -> str:
        return (
            f"distance={self.distance!r}, eps_in_per_dim={self.eps_in_per_dim}, "
            f"log_eps={self.log_eps}, anchors={self.anchors!r}, ties={self.ties!r}, "
            f"zero_label={self.zero_label!r}"
        )
