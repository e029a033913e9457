#!/usr/bin/env python3
"""The embedding-dimension experiment of Kim et al. (CVPR 2019) on any continuous-label task with configs
configs/<task>-{log-ratio,dense-triplet,binary-triplet}.toml: log-ratio vs triplet with dense mining vs triplet with
kNN-binarised labels, d in {16, 32, 64, 128}, several seeds.

    python scripts/build_rotation.py --dataset fashion-mnist
    python bench/continuous_tasks.py --task rotation-fashion-mnist --plot docs/continuous-dims-rotation-fashion-mnist
    python scripts/build_fontweight.py
    python bench/continuous_tasks.py --task fontweight --plot docs/continuous-dims-fontweight

For every (method, d, seed) it writes a config derived from the task's config (model.output_dim = d,
train.seed = seed, which seeds the head's initialisation and the sampler; feature-file data are fixed by their build
script), runs `simlearn train --json` from the repository root (config paths are relative to it) with
RAYON_NUM_THREADS=1 unless set, and reads the *last* epoch's validation metrics (leave-one-out retrieval on the
held-out test set: nDCG@10, nDCG@100, mean label distance of the top 1). No checkpoint is selected on the test set.
It also evaluates the raw test features (no model) with `simlearn eval` as a reference.

Prints a Markdown table (mean over seeds with a 95% Student-t half-width), writes <out>/results.json, and with
--plot PREFIX draws the three metrics against d (mean and 95% interval per method, raw features dashed) to
PREFIX.png and PREFIX.svg (needs matplotlib; everything else uses the standard library).
SIMLEARN_BIN overrides the binary (default target/release/simlearn).
"""
import argparse, json, os, re, statistics, subprocess, sys, time, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
METHODS = ["log_ratio", "dense_triplet", "binary_triplet"]
METRICS = ["ndcg_at_10", "ndcg_at_100", "mean_label_distance_at_1"]
TITLES = {"ndcg_at_10": "nDCG@10 (higher is better)", "ndcg_at_100": "nDCG@100 (higher is better)",
          "mean_label_distance_at_1": "mean label distance@1 (lower is better)"}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def env():
    e = dict(os.environ)
    e.setdefault("RAYON_NUM_THREADS", "1")
    return e


def config_text(task, method):
    return (ROOT / "configs" / f"{task}-{method.replace('_', '-')}.toml").read_text()


def run(task, method, dim, seed, out, epochs, max_batches):
    text = config_text(task, method)
    text = re.sub(r"(?m)^output_dim = .*$", f"output_dim = {dim}", text)
    text = re.sub(r"(?m)^seed = .*$", f"seed = {seed}", text)
    if epochs is not None:
        text = re.sub(r"(?m)^epochs = .*$", f"epochs = {epochs}", text)
    if max_batches is not None:
        text = re.sub(r"(?m)^max_batches = .*$", f"max_batches = {max_batches}", text)
    run_dir = out / f"{method}-d{dim}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir.parent / f"{run_dir.name}.toml"
    cfg.write_text(text)
    t0 = time.time()
    subprocess.run([str(BIN), "train", "--config", str(cfg), "--out", str(run_dir), "--json"], cwd=ROOT, env=env(),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.time() - t0
    last = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    r = {m: last["validation"][m] for m in METRICS}
    r["seconds"] = seconds
    return r


def raw_features(task):
    """Leave-one-out retrieval on the raw test features, with the task's label distance."""
    cfg = tomllib.loads(config_text(task, "log_ratio"))
    data = cfg.get("data", {})
    if data.get("source", "features") != "features":
        return None
    ld = cfg["continuous"].get("label_distance", {"kind": "euclidean"})
    ld_arg = f"circular:{ld['period']:g}" if ld["kind"] == "circular" else ld["kind"]
    p = subprocess.run([str(BIN), "eval", "--embeddings", data["val_features"], "--labels", data["val_labels"],
                        "--continuous-labels", "--label-distance", ld_arg, "--similarity", "sqeuclidean", "--json"],
                       cwd=ROOT, env=env(), check=True, capture_output=True, text=True)
    values = {m["name"]: m["value"] for m in json.loads(p.stdout)["metrics"]}
    return {m: values[m] for m in METRICS}


def summary(values):
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    return m, T975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5


def plot(results, raw, methods, dims, seeds, task, prefix):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"log_ratio": "#d62728", "dense_triplet": "#1f77b4", "binary_triplet": "#2ca02c"}
    labels = {"log_ratio": "log-ratio + dense", "dense_triplet": "triplet + dense", "binary_triplet": "triplet + binary"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.0), layout="constrained")
    for ax, metric in zip(axes, METRICS):
        for i, method in enumerate(methods):
            stats = [summary([results[(method, d, s)][metric] for s in seeds]) for d in dims]
            xs = [d * (1 + 0.04 * (i - 1)) for d in dims]  # small offsets so the bars do not overlap
            ax.errorbar(xs, [m for m, _ in stats], yerr=[h or 0 for _, h in stats], marker="o", capsize=3,
                        color=colours.get(method), label=labels.get(method, method))
        if raw is not None:
            ax.axhline(raw[metric], color="grey", linestyle="--", linewidth=1, label="raw pixels (no model)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims)
        ax.set_xticklabels([str(d) for d in dims])
        ax.set_xlabel("embedding dimension d")
        ax.set_title(TITLES[metric], fontsize=10)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.suptitle(f"{task}: mean of {len(seeds)} seeds, 95% Student-t intervals", fontsize=11)
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(prefix.with_suffix(".png"), dpi=110)
    fig.savefig(prefix.with_suffix(".svg"), metadata={"Date": None})  # no timestamp: same results, same file
    print(f"plot: {prefix.with_suffix('.png')}, {prefix.with_suffix('.svg')}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True, help="config prefix: configs/<task>-<method>.toml")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--dims", default="16,32,64,128")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--max-batches", type=int, default=None, help="override continuous.max_batches")
    ap.add_argument("--out", type=Path, default=None, help="default /tmp/continuous-<task>")
    ap.add_argument("--plot", default=None, help="write PREFIX.png and PREFIX.svg")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from <out>/results.json")
    a = ap.parse_args()
    methods = a.methods.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    dims = [int(d) for d in a.dims.split(",")]
    out = (a.out or Path(f"/tmp/continuous-{a.task}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if a.replot:
        saved = json.load(open(out / "results.json"))
        results = {}
        for key, v in saved["runs"].items():
            method, d, s = key.split("/")
            results[(method, int(d[1:]), int(s[1:]))] = v
        plot(results, saved["raw_features"], methods, dims, seeds, a.task, a.plot)
        return
    raw = raw_features(a.task)
    results = {}
    t0 = time.time()
    for method in methods:
        for d in dims:
            for s in seeds:
                r = run(a.task, method, d, s, out, a.epochs, a.max_batches)
                results[(method, d, s)] = r
                print(f"{method} d={d} seed={s}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()), file=sys.stderr)
    total = time.time() - t0
    print(f"| method | d | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for method in methods:
        for d in dims:
            cells = []
            for m in METRICS:
                mean, h = summary([results[(method, d, s)][m] for s in seeds])
                digits = 2 if m.startswith("mean_label") else 4
                cells.append(f"{mean:.{digits}f}" + (f" ± {h:.{digits}f}" if h is not None else ""))
            print(f"| {method} | {d} | " + " | ".join(cells) + " |")
    if raw is not None:
        print("| raw test features (no model) | – | " + " | ".join(
            f"{raw[m]:.2f}" if m.startswith("mean_label") else f"{raw[m]:.4f}" for m in METRICS) + " |")
    secs = [r["seconds"] for r in results.values()]
    print(f"\n{len(results)} runs, {total:.0f} s wall in all ({min(secs):.1f}-{max(secs):.1f} s per run)")
    json.dump({"task": a.task, "raw_features": raw, "total_seconds": total,
               "runs": {f"{k[0]}/d{k[1]}/s{k[2]}": v for k, v in results.items()}},
              open(out / "results.json", "w"), indent=1)
    if a.plot:
        plot(results, raw, methods, dims, seeds, a.task, a.plot)


if __name__ == "__main__":
    main()
