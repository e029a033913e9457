#!/usr/bin/env python3
"""PyTorch anchor of ``cargo bench -p simlearn --bench backbone_step``: one backbone training step and one
inference batch, same shapes, same threads.

Training step (``train_step``): a random image batch (N(0, 1), fixed seed) -> backbone (random init; BatchNorm in
eval mode, so running statistics stay frozen, with gamma/beta trained: the P256 recipe and simlearn's default
``batch_norm = "frozen_stats"``) -> global average pooling -> L2-normalise -> margin contrastive loss on the
cosine matrix (m+ 0.9, m- 0.6, simlearn's ``ContrastiveConfig`` defaults; each part divided by its count of
non-zero terms; batch / 4 classes x 4) -> backward -> ``torch.optim.Adam`` (lr 1e-5, weight decay 1e-4, coupled as
simlearn's Adam) -> ``optimizer.zero_grad(set_to_none=True)``. The loss is read back every step (``.item()``), as
the simlearn trainer and bench do.

Inference (``inference``): the same model under ``torch.inference_mode()`` in eval mode, pooled features read back
as a NumPy array (what ``simlearn embed`` computes per batch).

Models: torchvision ``resnet18`` (batch 32, 224 px), ``resnet50`` (batch 16, 224 px) and EfficientNet-Lite0
(batch 64, 96 px; the architecture of ``scripts/make_backbone_fixtures.py``, which the Rust loader is tested
against). Prints one JSON line per model and mode, the same fields as the Rust bench.

    /work/venv/bin/python bench/backbone_step_torch.py --model all --runs 10 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as fn
import torchvision

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"resnet18": (32, 224), "resnet50": (16, 224), "lite0": (64, 96)}


def lite0() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("fixtures", ROOT / "scripts" / "make_backbone_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.EfficientNetLite()


class Trunk(torch.nn.Module):
    """The backbone without its classifier: pooled features."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        if name == "lite0":
            self.net = lite0()
        else:
            self.net = getattr(torchvision.models, name)(weights=None)
            self.net.fc = torch.nn.Identity()

    def forward(self, x):
        return self.net.features(x) if self.name == "lite0" else self.net(x)


def contrastive(z: torch.Tensor, labels: torch.Tensor, m_pos: float = 0.9, m_neg: float = 0.6):
    z = fn.normalize(z, dim=1)
    s = z @ z.T
    same = (labels[:, None] == labels[None, :]).to(s.dtype)
    lp = torch.relu(m_pos - s) * same
    ln = torch.relu(s - m_neg) * (1.0 - same)
    cp = (lp > 0).sum().clamp(min=1).to(s.dtype)
    cn = (ln > 0).sum().clamp(min=1).to(s.dtype)
    return lp.sum() / cp + ln.sum() / cn


def summary(times: list[float]) -> dict:
    return {
        "runs": len(times),
        "median_ms": round(statistics.median(times), 1),
        "mean_ms": round(statistics.fmean(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
    }


def bench(name: str, runs: int, warmup: int, threads: int, skip_train: bool, skip_infer: bool) -> None:
    batch, size = SHAPES[name]
    torch.manual_seed(0)
    model = Trunk(name)
    model.eval()  # frozen BatchNorm statistics; parameters keep requires_grad
    x = torch.randn(batch, 3, size, size)
    labels = torch.arange(batch) // 4
    base = {"bench": "backbone_step", "backend": "torch", "torch": torch.__version__, "model": name,
            "batch": batch, "size": size, "threads": threads}
    if not skip_train:
        opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-4)
        times = []
        for i in range(warmup + runs):
            t = time.perf_counter()
            loss = contrastive(model(x), labels)
            loss.item()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps({**base, "mode": "train_step", **summary(times)}), flush=True)
    if not skip_infer:
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                t = time.perf_counter()
                y = model(x).numpy()
                assert y.size > 0
                if i >= warmup:
                    times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps({**base, "mode": "inference", **summary(times)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all", choices=["all", *SHAPES])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name in SHAPES if a.model == "all" else [a.model]:
        bench(name, max(a.runs, 1), a.warmup, a.threads, a.skip_train, a.skip_infer)


if __name__ == "__main__":
    main()
