#!/usr/bin/env python3
"""From Python, side by side in one process: ``simlearn.torch.ContextualLoss`` (the Rust fused
kernel behind a ``torch.autograd.Function``) vs the authors' PyTorch form of the hybrid loss
(``hybrid_loss`` of ``bench/contextual_torch.py``, imported, not copied), forward + backward.

Setting (as ``bench/contextual_torch.py``): float32, 2 threads (torch and rayon), a leaf
``n × 512`` tensor of random unit vectors, labels ``n/4`` classes × 4, P256 defaults (k 4,
eps 0.05, lam 0.4, gamma 0.1); n = 128, 256, 512. Each step is ``z.grad = None; loss(z,
y).backward()``; the two contestants alternate run by run (same load), median of ``--runs``
(default 30) after ``--warmup`` (default 5). Before timing, both are evaluated in float64 on the
same batch and must agree (loss to 1e-10, gradient to 1e-9 relative).

Usage: ``RAYON_NUM_THREADS=2 flock -x /tmp/simlearn-quiet.lock /work/venv/bin/python
bench/python_contextual_torch.py``. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "2")

import torch  # noqa: E402
import torch.nn.functional as fn  # noqa: E402

import simlearn  # noqa: E402
from simlearn.torch import ContextualLoss  # noqa: E402

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("contextual_torch", ROOT / "contextual_torch.py")
REF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REF)


def batch(n: int, d: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(n)
    z = fn.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).to(dtype)
    return z, torch.arange(n // 4).repeat_interleave(4)


def agreement(n: int, d: int) -> dict:
    z, y = batch(n, d, torch.float64)
    a = z.clone().requires_grad_(True)
    la = ContextualLoss()(a, y)
    la.backward()
    b = z.clone().requires_grad_(True)
    lb = REF.hybrid_loss(b, y)
    lb.backward()
    scale = b.grad.abs().max().item()
    out = {"loss_simlearn": la.item(), "loss_torch": lb.item(), "abs_diff_loss": abs(la.item() - lb.item()),
           "max_abs_diff_grad_rel": (a.grad - b.grad).abs().max().item() / scale}
    if out["abs_diff_loss"] > 1e-10 or out["max_abs_diff_grad_rel"] > 1e-9:
        sys.exit(f"n={n}: simlearn and the PyTorch reference disagree: {out}")
    return out


def bench(n: int, d: int, warmup: int, runs: int) -> dict:
    z, y = batch(n, d)
    z.requires_grad_(True)
    ours = ContextualLoss()
    steps = {"simlearn": lambda: ours(z, y), "torch": lambda: REF.hybrid_loss(z, y)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + runs):
        for name, f in steps.items():
            z.grad = None
            t0 = time.perf_counter()
            loss = f()
            loss.backward()
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "n": n, "d": d, "runs": runs,
        "median_ms": med,
        "min_ms": {k: min(v) for k, v in times.items()},
        "torch_over_simlearn": med["torch"] / med["simlearn"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--d", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(2)
    load = os.getloadavg()[0]
    agree = {n: agreement(n, args.d) for n in (128, 256, 512)}
    results = [bench(n, args.d, args.warmup, args.runs) for n in (128, 256, 512)]
    print(json.dumps({
        "agreement_float64": agree,
        "torch": torch.__version__, "simlearn": simlearn.__version__, "python": platform.python_version(),
        "threads": {"torch": torch.get_num_threads(), "rayon": os.environ["RAYON_NUM_THREADS"]},
        "dtype": "float32", "load1_before": load, "load1_after": os.getloadavg()[0],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
