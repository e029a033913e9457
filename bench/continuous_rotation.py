#!/usr/bin/env python3
"""Log-ratio vs the two triplet baselines of Kim et al. (CVPR 2019) on the rotated-digits task, over seeds and
embedding dimensions (the paper's d in {16, 32, 64, 128} experiment, on a small offline task).

For every (method, d, seed) it writes a config derived from configs/rotated-digits-<method>.toml (output_dim = d,
train.seed = seed; the seed also draws the rotation angles), runs `simlearn train --json`, and reads the last
epoch's validation metrics from the run folder (leave-one-out retrieval on the held-out half: nDCG@10, nDCG@100,
mean angle error of the top 1). Prints a Markdown table: mean over seeds with a 95% Student-t interval.

    python bench/continuous_rotation.py --seeds 0,1,2 --dims 16,32,64,128 --out /tmp/rotation-runs
Uses only the standard library; SIMLEARN_BIN overrides the binary (default target/release/simlearn).
"""
import argparse, json, os, re, statistics, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
METHODS = ["log_ratio", "dense_triplet", "binary_triplet"]
METRICS = ["ndcg_at_10", "ndcg_at_100", "mean_label_distance_at_1"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def run(method, dim, seed, out):
    text = (ROOT / "configs" / f"rotated-digits-{method.replace('_', '-')}.toml").read_text()
    text = re.sub(r"(?m)^output_dim = .*$", f"output_dim = {dim}", text)
    text = re.sub(r"(?m)^seed = .*$", f"seed = {seed}", text)
    run_dir = out / f"{method}-d{dim}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir.parent / f"{run_dir.name}.toml"
    cfg.write_text(text)
    subprocess.run([str(BIN), "train", "--config", str(cfg), "--out", str(run_dir), "--json"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return {m: last["validation"][m] for m in METRICS}


def summary(values):
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    h = T975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5
    return m, h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--dims", default="16,32,64,128")
    ap.add_argument("--out", default="/tmp/rotation-runs")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    dims = [int(d) for d in a.dims.split(",")]
    out = Path(a.out)
    results = {}
    for method in METHODS:
        for d in dims:
            for s in seeds:
                results[(method, d, s)] = run(method, d, s, out)
                print(f"{method} d={d} seed={s}: {results[(method, d, s)]}", file=sys.stderr)
    print(f"| method | d | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for method in METHODS:
        for d in dims:
            cells = []
            for m in METRICS:
                mean, h = summary([results[(method, d, s)][m] for s in seeds])
                digits = 1 if m.startswith("mean_label") else 4
                cells.append(f"{mean:.{digits}f}" + (f" ± {h:.{digits}f}" if h is not None else ""))
            print(f"| {method} | {d} | " + " | ".join(cells) + " |")
    json.dump({f"{k[0]}/d{k[1]}/s{k[2]}": v for k, v in results.items()}, open(out / "results.json", "w"), indent=1)


if __name__ == "__main__":
    main()
