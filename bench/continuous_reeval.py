#!/usr/bin/env python3
"""Re-evaluates the last checkpoints of a bench/continuous_tasks.py run folder under another label distance, to see
*which* errors a method makes. Example: on rotated Fashion-MNIST many items (trousers, dresses, bags) look the same
after a half turn, so an embedding that confuses theta with theta + 180 loses much under the 360-degree distance;
re-scoring with `--label-distance circular:180 --labels-mod 180` forgives exactly those half-turn confusions.

    python bench/continuous_reeval.py --runs /tmp/continuous-rotation-fashion-mnist --label-distance circular:180 \
        --labels-mod 180
    python bench/continuous_reeval.py --runs /tmp/continuous-fontweight --label-distance euclidean --labels-scale 100 \
        --group-key test_chars

For every run folder it embeds the test features (config.toml [data] val_features) with last.safetensors in numpy
(the head: Linear, ReLU between layers, optional L2 normalisation, as crates/simlearn/src/models), checks that the
embedding reproduces the trainer's own last-epoch nDCG@10 under the run's label distance (to 1e-3; a mismatch is an
error), then runs `simlearn eval` with the new label distance. Prints a Markdown table (mean over seeds, 95%
Student-t half-width). Needs numpy; SIMLEARN_BIN overrides the binary.
"""
import argparse, json, os, statistics, struct, subprocess, sys, tempfile, tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
METRICS = ["ndcg_at_10", "ndcg_at_100", "mean_label_distance_at_1"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def load_safetensors(path):
    b = Path(path).read_bytes()
    n, = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or not k.startswith("head."):
            continue
        if v["dtype"] != "F32":
            raise ValueError(f"{path}: {k} is {v['dtype']}")
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], "<f4").reshape(v["shape"])
    return out


def embed(run_dir):
    cfg = tomllib.loads((run_dir / "config.toml").read_text())
    w = load_safetensors(run_dir / "last.safetensors")
    x = np.load(ROOT / cfg["data"]["val_features"]).astype(np.float64)
    if cfg["model"].get("standardize"):
        x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    n_layers = len(cfg["model"].get("hidden", [])) + 1
    for i in range(n_layers):
        x = x @ w[f"head.layers.{i}.weight"] + w[f"head.layers.{i}.bias"]
        if i < n_layers - 1:
            x = np.maximum(x, 0)
    if cfg["model"].get("normalize", True):
        x = x / np.sqrt((x * x).sum(1, keepdims=True) + 1e-12)
    return x.astype(np.float32), cfg


def evaluate(emb_path, labels_path, label_distance):
    p = subprocess.run([str(BIN), "eval", "--embeddings", str(emb_path), "--labels", str(labels_path),
                        "--continuous-labels", "--label-distance", label_distance, "--similarity", "sqeuclidean",
                        "--json"], cwd=ROOT, check=True, capture_output=True, text=True,
                       env={**os.environ, "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS", "1")})
    return {m["name"]: m["value"] for m in json.loads(p.stdout)["metrics"]}


def same_group(emb, groups):
    """Fraction of items whose leave-one-out nearest neighbour (squared Euclidean) has the same group."""
    e = emb.astype(np.float64)
    sq = (e * e).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * e @ e.T
    np.fill_diagonal(dist, np.inf)
    nn = dist.argmin(1)
    g = np.array(list(groups))
    return float((g[nn] == g).mean())


def ld_arg(ld):
    return f"circular:{ld['period']:g}" if ld["kind"] == "circular" else ld["kind"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--label-distance", required=True, help="as simlearn eval: euclidean, circular:PERIOD, ...")
    ap.add_argument("--labels-mod", type=float, default=None, help="take the test labels modulo this first")
    ap.add_argument("--labels-scale", type=float, default=None,
                    help="divide the test labels by this (nDCG's relevance 1/(1 + distance) depends on label units)")
    ap.add_argument("--group-key", default=None,
                    help="a meta.json key next to the test features holding one group character per test item "
                         "(fontweight: test_chars); adds the fraction of top-1 neighbours in the same group")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reeval-"))
    rows = {}
    raw_done = False
    for run_dir in sorted(p for p in a.runs.iterdir() if (p / "last.safetensors").exists()):
        method, d, s = run_dir.name.rsplit("-", 2)
        emb, cfg = embed(run_dir)
        np.save(tmp / "emb.npy", emb)
        labels = np.load(ROOT / cfg["data"]["val_labels"]).astype(np.float32)
        own = evaluate(tmp / "emb.npy", ROOT / cfg["data"]["val_labels"], ld_arg(cfg["continuous"]["label_distance"]))
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["validation"]
        if abs(own["ndcg_at_10"] - last["ndcg_at_10"]) > 1e-3:
            sys.exit(f"{run_dir}: numpy embedding gives nDCG@10 {own['ndcg_at_10']:.4f}, trainer {last['ndcg_at_10']:.4f}")
        if a.labels_mod:
            labels = np.mod(labels, a.labels_mod).astype(np.float32)
        if a.labels_scale:
            labels = (labels / a.labels_scale).astype(np.float32)
        np.save(tmp / "labels.npy", labels)
        r = evaluate(tmp / "emb.npy", tmp / "labels.npy", a.label_distance)
        if a.group_key:
            groups = json.loads((ROOT / cfg["data"]["val_features"]).parent.joinpath("meta.json").read_text())[a.group_key]
            r["top1_same_group"] = same_group(emb, groups)
        rows.setdefault((method, int(d[1:])), []).append(r)
        if not raw_done:
            raw = evaluate(ROOT / cfg["data"]["val_features"], tmp / "labels.npy", a.label_distance)
            if a.group_key:
                raw["top1_same_group"] = same_group(np.load(ROOT / cfg["data"]["val_features"]), groups)
            rows[("raw test features (no model)", 0)] = [raw]
            raw_done = True
        print(f"{run_dir.name}: {rows[(method, int(d[1:]))][-1]['ndcg_at_10']:.4f}", file=sys.stderr)
    print(f"label distance {a.label_distance}" + (f", labels mod {a.labels_mod:g}" if a.labels_mod else "")
          + (f", labels / {a.labels_scale:g}" if a.labels_scale else ""))
    metrics = METRICS + (["top1_same_group"] if a.group_key else [])
    print("| method | d | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    order = {"log_ratio": 0, "dense_triplet": 1, "binary_triplet": 2}
    for (method, d), rs in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        cells = []
        for m in metrics:
            v = [r[m] for r in rs]
            mean = statistics.fmean(v)
            h = T975[len(v) - 1] * statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else None
            dg = 2 if m.startswith("mean_label") else 4
            cells.append(f"{mean:.{dg}f}" + (f" ± {h:.{dg}f}" if h is not None else ""))
        print(f"| {method} | {d or '–'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
