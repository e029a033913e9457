#!/usr/bin/env python3
"""Emoji-10 benchmark: heads on frozen EfficientNet-Lite0 ImageNet features, evaluated on the held-out (test) classes.

Methods: the pretrained features without training, and contrastive, triplet (distance-weighted miner),
multi-similarity and contextual-hybrid heads, each with its paper-default loss parameters (the registry defaults,
crates/simlearn/src/losses/) and the same budget: Linear 1280 -> 512 + L2 (the paper's head), Adam (weight decay
1e-4), batches of 128 = 32 classes x 4, the same learning rate and number of epochs.

Protocol (no selection on the test classes):
1. tune: the shared learning rate and epoch count are chosen on a class-disjoint split of the *training* classes
   (`split_train = true` on train.npy: the first half of the 530 training classes trains, the other half
   validates), seed 0, validating every --eval-every epochs; the (lr, epochs) with the highest MAP@R averaged
   over the four losses wins.
2. final: every loss is trained on all training classes with that (lr, epochs), seeds 0, 1, 2, and evaluated
   once, at the last epoch, on the test classes (`eval_every = epochs`: the only validated epoch is the last, so
   no checkpoint is selected on test). Leave-one-out cosine retrieval over the 5,261 test images.
3. baseline: `simlearn eval --ci` on the raw test features (deterministic; its 95% interval is the percentile
   bootstrap over queries, not over seeds).
Prints the Markdown table: mean over seeds with a 95% Student-t interval (t_{0.975, n-1} * sd / sqrt(n)).

    python3 bench/emoji10_heads.py --out /tmp/emoji10-heads [--write-configs]
Needs data/emoji10/feats/{train,test}.npy and *_labels.npy (simlearn embed, see BENCHMARKS.md). Standard library
only; SIMLEARN_BIN overrides the binary (default target/release/simlearn). With --write-configs the final configs
(seed 0) are written to configs/emoji10-<loss>.toml.
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
FEATS = "data/emoji10/feats"
LOSSES = ["contrastive", "triplet", "multi_similarity", "contextual"]
LABEL = {"contrastive": "contrastive head", "triplet": "triplet head (distance-weighted)",
         "multi_similarity": "multi-similarity head", "contextual": "contextual hybrid head"}
METRICS = ["recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "map_at_r"]
HEAD = ["R@1", "R@2", "R@4", "R@8", "MAP@R"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def config(loss, lr, epochs, seed, eval_every, tune):
    if tune:
        data = (f'features = "{FEATS}/train.npy"\nlabels = "{FEATS}/train_labels.npy"\n'
                "split_train = true      # class-disjoint: first half of the training classes trains, second validates\n")
    else:
        data = (f'features = "{FEATS}/train.npy"\nlabels = "{FEATS}/train_labels.npy"\n'
                f'val_features = "{FEATS}/test.npy"   # held-out classes, evaluated once (last epoch)\n'
                f'val_labels = "{FEATS}/test_labels.npy"\nsplit_train = false\n')
    return f"""# Emoji-10: a {loss} head on frozen EfficientNet-Lite0 ImageNet features (bench/emoji10_heads.py).
# Same budget for every loss: Linear 1280 -> 512 + L2, batches of 32 classes x 4, Adam, lr and epochs chosen on a
# class-disjoint split of the training classes; loss parameters are the paper defaults.

[data]
source = "features"
{data}
[model]
output_dim = 512
hidden = []
normalize = true

[loss]
name = "{loss}"

[sampler]
batch_size = 128
samples_per_class = 4

[optim]
kind = "adam"
lr = {lr:g}
weight_decay = 1e-4

[train]
epochs = {epochs}
seed = {seed}
eval_every = {eval_every}
select_metric = "map_at_r"
"""


def train(text, run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir.parent / f"{run_dir.name}.toml"
    cfg.write_text(text)
    t = time.time()
    subprocess.run([str(BIN), "train", "--config", str(cfg), "--out", str(run_dir), "--json"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recs = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return recs, time.time() - t


def summary(values):
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    return m, T975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/emoji10-heads")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3")
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--write-configs", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    seeds = [int(s) for s in a.seeds.split(",")]
    lrs = [float(x) for x in a.lrs.split(",")]
    log = lambda *m: print(*m, file=sys.stderr, flush=True)
    results = {"tune": {}, "final": {}, "seconds": {}}

    # 1. tune on the class-disjoint split of the training classes
    curves = {}
    for loss in LOSSES:
        for lr in lrs:
            recs, s = train(config(loss, lr, a.max_epochs, 0, a.eval_every, True), out / "tune" / f"{loss}-lr{lr:g}")
            curves[(loss, lr)] = {r["epoch"] + 1: r["validation"]["map_at_r"] for r in recs if r.get("validation")}
            results["seconds"][f"tune/{loss}/lr{lr:g}"] = s
            log(f"tune {loss} lr={lr:g} ({s:.0f}s): " + " ".join(f"{e}:{v:.3f}" for e, v in curves[(loss, lr)].items()))
    epochs_grid = sorted(set.intersection(*(set(c) for c in curves.values())))
    score = {(lr, e): statistics.fmean(curves[(l, lr)][e] for l in LOSSES) for lr in lrs for e in epochs_grid}
    lr, epochs = max(score, key=lambda k: (score[k], -k[1]))
    results["tune"] = {"curves": {f"{l}/lr{x:g}": c for (l, x), c in curves.items()},
                       "chosen": {"lr": lr, "epochs": epochs, "mean_val_map_at_r": score[(lr, epochs)]}}
    log(f"chosen on the training-class split: lr={lr:g}, epochs={epochs} (mean val MAP@R {score[(lr, epochs)]:.4f})")

    # 2. final: all training classes, evaluated once on the test classes at the last epoch
    final = {}
    for loss in LOSSES:
        if a.write_configs:
            (ROOT / "configs" / f"emoji10-{loss.replace('_', '-')}.toml").write_text(
                config(loss, lr, epochs, 0, epochs, False))
        for s in seeds:
            recs, sec = train(config(loss, lr, epochs, s, epochs, False), out / "final" / f"{loss}-s{s}")
            validated = [r for r in recs if r.get("validation")]
            assert len(validated) == 1 and validated[0]["epoch"] == epochs - 1, "only the last epoch may be evaluated"
            final[(loss, s)] = {m: validated[0]["validation"][m] for m in METRICS}
            results["seconds"][f"final/{loss}/s{s}"] = sec
            log(f"final {loss} seed={s} ({sec:.0f}s): {final[(loss, s)]}")
    results["final"] = {f"{l}/s{s}": v for (l, s), v in final.items()}

    # 3. the pretrained features, no training
    ev = subprocess.run([str(BIN), "eval", "--embeddings", f"{FEATS}/test.npy", "--labels", f"{FEATS}/test_labels.npy",
                         "--ci", "--json", "--k", "1,2,4,8"], check=True, cwd=ROOT, capture_output=True, text=True)
    base = {m["name"]: (m["value"], m.get("ci")) for m in json.loads(ev.stdout)["metrics"]}
    results["pretrained"] = {m: base[m] for m in METRICS}

    print(f"Shared budget: lr {lr:g}, {epochs} epochs (chosen on the training-class split), seeds {a.seeds}.\n")
    print("| method | " + " | ".join(HEAD) + " |")
    print("|---|" + "---|" * len(METRICS))
    cells = []
    for m in METRICS:
        v, ci = base[m]
        cells.append(f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]")
    print("| pretrained EfficientNet-Lite0 features, no training (bootstrap over queries) | " + " | ".join(cells) + " |")
    for loss in LOSSES:
        cells = []
        for m in METRICS:
            mean, h = summary([final[(loss, s)][m] for s in seeds])
            cells.append(f"{mean:.4f}" + (f" ± {h:.4f}" if h is not None else ""))
        print(f"| {LABEL[loss]} | " + " | ".join(cells) + " |")
    print("\nTuning (validation MAP@R on the held-out half of the training classes, seed 0):\n")
    print("| lr | " + " | ".join(f"{l}" for l in LOSSES) + " | mean |")
    print("|---|" + "---|" * (len(LOSSES) + 1))
    for x in lrs:
        best_e = max(epochs_grid, key=lambda e: score[(x, e)])
        print(f"| {x:g} (best at {best_e} epochs) | " +
              " | ".join(f"{curves[(l, x)][best_e]:.4f}" for l in LOSSES) + f" | {score[(x, best_e)]:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    json.dump(results, open(out / "results.json", "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
