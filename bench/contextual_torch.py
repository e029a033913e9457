#!/usr/bin/env python3
"""PyTorch reference of the contextual hybrid loss (spec: /work/shared/specs/contextual-loss.md), and its timings.

Written from the spec, not from the authors' code:

* E1-E10 (section 1.2): D = max(0, 2 - 2S); per-row k-th / (k/2)-th smallest D (self included, values detached);
  A = H(eps - D, -d_k), B = H(eps - D, -d_h) with the straight-through Heaviside of section 1.3 as a
  ``torch.autograd.Function`` (forward 1[x >= t], backward gain * upstream, gain 10); P = A A^T / sg(|N|),
  Q = Abar Abar^T / sg(|Nbar|); W~ = (P + Q)/2 * A; R = B * B^T, r = rowsum R (not detached);
  W^ = R W~ / r; W = (W^ + W^T)/2; L_ctx = sum_{i != j} (W - Y)^2 / n^2.
* section 2.2 contrastive on cosine, m+ 0.75, m- 0.6, each part divided by its count of non-zero terms (constant),
  all ordered pairs including the diagonal;
* section 2.3 regulariser (mean(S) - 0.25)^2 over all n^2 entries;
* section 2.4 P256 weights: L = 0.4 L_ctx + 0.1 L_reg + 0.5 L_con.
* section 9.1 guard: Q's row i is 0 when |Nbar(i)| = 0 (the authors' code gives NaN there); it does not change any
  non-degenerate value.

The loss takes raw embeddings and L2-normalises inside, as simlearn's ``ContextualLoss`` does, so both time the
same work. First the script reproduces the worked example of section 8 (float64): L_total 0.26978714 and the
printed gradient matrices; it exits non-zero if that fails. Then it times, in float32 with 2 threads, median of
``--runs`` (default 30) after ``--warmup`` (default 5):

* ``contextual_fwd_bwd``: loss forward + backward on a leaf n x 512 tensor of random unit vectors, labels n/4
  classes x 4, n = 128, 256, 512;
* ``head_step``: batch 128, input 2048, Linear(2048, 512), L2-normalise, section 2.2 contrastive loss on the
  128 x 128 cosine matrix (m+ 0.75, m- 0.6), backward, Adam step (lr 1e-4);
* ``head_step_hybrid``: the same step with the full hybrid loss.

Prints one JSON document. Usage: ``/work/venv/bin/python bench/contextual_torch.py [--runs 30]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as fn

GAIN = 10.0
K, EPS = 4, 0.05
LAM, GAM = 0.4, 0.1
M_POS, M_NEG, S_REG = 0.75, 0.6, 0.25


class HeavisideST(torch.autograd.Function):
    """1[x >= t] forward (ties give 1); backward passes GAIN * upstream to x, nothing to the detached t."""

    @staticmethod
    def forward(ctx, x, t):
        return (x >= t).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return GAIN * grad_out, None


def contextual_terms(s: torch.Tensor, same: torch.Tensor, k: int = K, eps: float = EPS):
    n = s.shape[0]
    d = (2.0 - 2.0 * s).clamp(min=0.0)
    x = eps - d
    # Thresholds as values (never indices): ties and eps-close points all enter the neighbourhoods.
    top = torch.topk(-d, k, dim=1).values.detach()
    tau_a, tau_b = top[:, k - 1 : k], top[:, k // 2 - 1 : k // 2]
    a = HeavisideST.apply(x, tau_a)
    b = HeavisideST.apply(x, tau_b)
    a_cnt = a.sum(1, keepdim=True).detach()
    a_bar = 1.0 - a
    a_bar_cnt = a_bar.sum(1, keepdim=True).detach()
    p = (a @ a.T) / a_cnt
    q = (a_bar @ a_bar.T) / a_bar_cnt.clamp(min=1.0)  # section 9.1 guard: the numerator row is 0 there anyway
    w_tilde = 0.5 * (p + q) * a
    r = b * b.T
    w_hat = (r @ w_tilde) / r.sum(1, keepdim=True)
    w = 0.5 * (w_hat + w_hat.T)
    off = 1.0 - torch.eye(n, dtype=s.dtype, device=s.device)
    l_ctx = (off * (w - same) ** 2).sum() / n**2
    return l_ctx, w


def contrastive(s: torch.Tensor, same: torch.Tensor, m_pos: float = M_POS, m_neg: float = M_NEG):
    lp = torch.relu(m_pos - s) * same
    ln = torch.relu(s - m_neg) * (1.0 - same)
    # Counts are constants; a zero count means a zero sum, so clamping the divisor to 1 gives the spec's 0.
    cp = (lp > 0).sum().clamp(min=1).to(s.dtype)
    cn = (ln > 0).sum().clamp(min=1).to(s.dtype)
    return lp.sum() / cp + ln.sum() / cn


def hybrid_from_s(s: torch.Tensor, same: torch.Tensor):
    l_ctx, _ = contextual_terms(s, same)
    l_con = contrastive(s, same)
    l_reg = (s.mean() - S_REG) ** 2
    return LAM * l_ctx + GAM * l_reg + (1.0 - LAM - GAM) * l_con, (l_ctx, l_con, l_reg)


def hybrid_loss(z: torch.Tensor, labels: torch.Tensor):
    f = fn.normalize(z, dim=1)
    same = (labels[:, None] == labels[None, :]).to(z.dtype)
    return hybrid_from_s(f @ f.T, same)[0]


# ---------------------------------------------------------------------------------------------------------------
# worked example (section 8)

SPEC_DL_DS = [
    [-0.08165, 0.02095, -0.21134, 0.19196, 0.02095, -0.04634],
    [-0.09971, 0.0404, -0.06689, 0.29474, 0.0404, -0.10606],
    [-0.29335, 0.09186, 0.15526, 0.55321, 0.20769, -0.34752],
    [0.17498, 0.4538, 0.53911, 0.08345, -0.61992, -0.67273],
    [0.07679, -0.00238, 0.15074, -0.12912, -0.00238, 0.01199],
    [0.08838, -0.0262, 0.00505, -0.34217, -0.0262, 0.05713],
]
SPEC_DL_DZ = [[0.0, 0.07808], [-0.11806, 0.4735], [-0.38581, 0.39952],
              [2.15253, -1.24276], [0.02708, 0.0], [-1.06567, -0.8942]]


def check_worked_example() -> dict:
    th = torch.deg2rad(torch.tensor([0.0, 14.0, 44.0, 60.0, 90.0, 130.0], dtype=torch.float64))
    f = torch.stack([torch.cos(th), torch.sin(th)], 1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    same = (labels[:, None] == labels[None, :]).to(torch.float64)
    s = (f @ f.T).detach().requires_grad_(True)
    total, (l_ctx, l_con, l_reg) = hybrid_from_s(s, same)
    total.backward()
    z = f.clone().requires_grad_(True)
    hybrid_loss(z, labels).backward()
    same04 = same
    l_ctx_eps04, _ = contextual_terms((f @ f.T), same04, eps=0.04)
    got = {
        "L_ctx": l_ctx.item(), "L_contrast": l_con.item(), "L_reg": l_reg.item(), "L_total": total.item(),
        "L_ctx_eps0.04": l_ctx_eps04.item(),
    }
    want = {"L_ctx": 0.15075521, "L_contrast": 0.40284617, "L_reg": 0.08061968, "L_total": 0.26978714,
            "L_ctx_eps0.04": 0.13411458}
    err_scalar = max(abs(got[key] - want[key]) for key in want)
    err_ds = (s.grad - torch.tensor(SPEC_DL_DS, dtype=torch.float64)).abs().max().item()
    err_dz = (z.grad - torch.tensor(SPEC_DL_DZ, dtype=torch.float64)).abs().max().item()
    ok = err_scalar < 5e-9 and err_ds < 6e-6 and err_dz < 6e-6
    return {"ok": ok, "values": got, "max_abs_err_scalars": err_scalar,
            "max_abs_err_dL_dS": err_ds, "max_abs_err_dL_dz": err_dz,
            "tolerances": "scalars 5e-9 (spec prints 8 decimals), gradients 6e-6 (spec prints 5 decimals)"}


# ---------------------------------------------------------------------------------------------------------------
# timings


def timed(fn_step, warmup: int, runs: int) -> dict:
    for _ in range(warmup):
        fn_step()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn_step()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": runs}


def bench_contextual(n: int, d: int, warmup: int, runs: int) -> dict:
    g = torch.Generator().manual_seed(n)
    z = fn.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(True)
    labels = torch.arange(n // 4).repeat_interleave(4)

    def step():
        z.grad = None
        loss = hybrid_loss(z, labels)
        loss.backward()
        if not math.isfinite(loss.item()):
            sys.exit(f"non-finite loss at n={n}")

    return {"bench": "contextual_fwd_bwd", "n": n, "d": d, **timed(step, warmup, runs)}


def bench_head(loss_name: str, warmup: int, runs: int) -> dict:
    torch.manual_seed(0)
    batch, d_in, d_out = 128, 2048, 512
    head = torch.nn.Linear(d_in, d_out)
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    x = torch.randn(batch, d_in)
    labels = torch.arange(batch // 4).repeat_interleave(4)
    same = (labels[:, None] == labels[None, :]).float()

    def step():
        opt.zero_grad(set_to_none=True)
        e = fn.normalize(head(x), dim=1)
        if loss_name == "contrastive":
            loss = contrastive(e @ e.T, same)
        else:
            loss = hybrid_from_s(e @ e.T, same)[0]
        loss.backward()
        opt.step()

    name = "head_step" if loss_name == "contrastive" else "head_step_hybrid"
    return {"bench": name, "batch": batch, "d_in": d_in, "d_out": d_out, "loss": loss_name,
            "optimizer": "Adam(lr=1e-4)", **timed(step, warmup, runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    example = check_worked_example()
    if not example["ok"]:
        print(json.dumps({"worked_example": example}, indent=2))
        sys.exit("worked example of contextual-loss.md section 8 NOT reproduced")

    load_before = os.getloadavg()[0]
    results = [bench_contextual(n, 512, args.warmup, args.runs) for n in (128, 256, 512)]
    results.append(bench_head("contrastive", args.warmup, args.runs))
    results.append(bench_head("hybrid", args.warmup, args.runs))
    print(json.dumps({
        "worked_example": example,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "load1_before": load_before,
        "load1_after": os.getloadavg()[0],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
