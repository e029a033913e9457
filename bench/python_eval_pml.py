#!/usr/bin/env python3
"""From Python, side by side: ``simlearn.AccuracyCalculator`` vs pytorch-metric-learning's
``AccuracyCalculator`` on the SOP-shaped set of ``bench/eval_sop_shape.py`` (60,502 × 512 float32,
11,316 classes of 2..12, leave-one-out).

Both are called the way a PML user calls them, with the same arguments:

    calc = AccuracyCalculator(include=INCLUDE, k=K)          # PML: device=cpu, its default FaissKNN
    calc.get_accuracy(embeddings, labels)                     # reference=None: leave-one-out

with INCLUDE = precision_at_1, r_precision, mean_average_precision_at_r, mean_average_precision,
mean_reciprocal_rank, for each K of ``--k`` (default ``max_bin_count`` and 100). PML's default
``k=None`` would retrieve all 60,501 neighbours per query and does not fit in memory (see
BENCHMARKS.md); NMI/AMI are left out (k-means, not retrieval).

Each contestant runs in its own process under ``/usr/bin/time -v`` (wall time and peak RSS of
the whole process, imports and ``np.load`` included) and under ``flock -x
/tmp/simlearn-quiet.lock`` (no build running beside it), held to 2 threads (torch, faiss/OpenMP,
rayon). The in-process time of ``get_accuracy`` alone is reported too, and the metric values
of the two are compared.

Usage::

    python bench/eval_sop_shape.py gen          # the data, once (about 1 minute)
    python bench/python_eval_pml.py [--k max_bin_count,100] [--repeat 1] [--only simlearn,pml]

Prints a table and writes every run to /work/data/bench/results/python_eval_pml.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("SIMLEARN_BENCH_DATA", "/work/data/bench"))
RESULTS = DATA / "results"
EMB, LAB = DATA / "sop_embeddings.npy", DATA / "sop_labels.npy"
THREADS = 2
INCLUDE = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)
LOCK = "/tmp/simlearn-quiet.lock"


def parse_k(s: str):
    return s if s == "max_bin_count" else int(s)


def worker(tool: str, k) -> None:
    t_start = time.perf_counter()
    if tool == "pml":
        import faiss
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        torch.set_num_threads(THREADS)
        faiss.omp_set_num_threads(THREADS)
        emb, lab = torch.from_numpy(np.load(EMB)), torch.from_numpy(np.load(LAB))
        calc = AccuracyCalculator(include=INCLUDE, k=k, device=torch.device("cpu"))
        version = __import__("pytorch_metric_learning").__version__
    else:
        import simlearn

        emb, lab = np.load(EMB), np.load(LAB)
        calc = simlearn.AccuracyCalculator(include=INCLUDE, k=k)
        version = simlearn.__version__
    t_loaded = time.perf_counter()
    res = calc.get_accuracy(emb, lab)
    t_done = time.perf_counter()
    print(json.dumps({
        "metrics": {m: float(v) for m, v in res.items()},
        "version": version,
        "t_import_load_s": t_loaded - t_start,
        "t_get_accuracy_s": t_done - t_loaded,
    }))


TIME_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)")
TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def wall_seconds(s: str) -> float:
    secs = 0.0
    for p in s.strip().split(":"):
        secs = secs * 60 + float(p)
    return secs


def run_one(tool: str, k) -> dict:
    cmd = ["flock", "-x", LOCK, "/usr/bin/time", "-v", sys.executable, str(Path(__file__).resolve()),
           "worker", "--tool", tool, "--k", str(k)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               RAYON_NUM_THREADS=str(THREADS))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{tool} k={k} failed:\n{proc.stderr[-3000:]}")
    rec = {
        "tool": tool,
        "k": k,
        "load1_before": load,
        "wall_s": wall_seconds(TIME_WALL.search(proc.stderr).group(1)),
        "peak_rss_mb": int(TIME_RSS.search(proc.stderr).group(1)) / 1024,
        "driver_wall_s_incl_lock_wait": time.perf_counter() - t0,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{tool:9s} k={str(k):13s} wall {rec['wall_s']:7.2f} s  get_accuracy {rec['t_get_accuracy_s']:7.2f} s  "
          f"peak RSS {rec['peak_rss_mb']:8.1f} MB  load {load:.2f}", flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--tool", choices=["pml", "simlearn"], required=True)
    w.add_argument("--k", type=parse_k, required=True)
    ap.add_argument("--k", default="max_bin_count,100")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", default="simlearn,pml")
    args = ap.parse_args()
    if args.cmd == "worker":
        worker(args.tool, args.k)
        return
    if not EMB.exists():
        sys.exit(f"{EMB} missing: run python bench/eval_sop_shape.py gen first")
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    runs = []
    for k in [parse_k(s) for s in args.k.split(",")]:
        for _ in range(args.repeat):
            for tool in args.only.split(","):
                runs.append(run_one(tool, k))
    print("\n| k | contestant | wall s | get_accuracy s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['k']} | {r['tool']} | {r['wall_s']:.2f} | {r['t_get_accuracy_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    print("\nmetric differences (simlearn - PML):")
    for k in sorted({r["k"] for r in runs}, key=str):
        by = {r["tool"]: r for r in runs if r["k"] == k}
        if {"pml", "simlearn"} <= set(by):
            for m in INCLUDE:
                a, b = by["simlearn"]["metrics"][m], by["pml"]["metrics"][m]
                print(f"  k={k} {m}: simlearn {a:.10f}  PML {b:.10f}  diff {a - b:+.2e}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"cpu": cpu, "python": platform.python_version(), "threads": THREADS, "include": INCLUDE, "runs": runs}
    (RESULTS / "python_eval_pml.json").write_text(json.dumps(out, indent=2))
    print(f"\nwritten {RESULTS / 'python_eval_pml.json'}")


if __name__ == "__main__":
    main()
