#!/usr/bin/env python3
"""Emoji-10 fine-tuning comparison (issue 11, item 4): EfficientNet-Lite0 (ImageNet weights) + Linear 1280 -> 512,
fine-tuned with each loss at its paper defaults, evaluated on the 529 held-out test classes.

Methods: contrastive, triplet (distance-weighted miner), multi-similarity, Smooth-AP, the contextual hybrid, and the
contextual paper's ablation: the hybrid without its contextual term (lambda = 0: 0.9 contrastive + 0.1 regulariser).

Budget (the same for every method, sized for a 2-core CPU): the last `--train-stages` stages of the trunk train (Lite0:
the last MBConv stage and the 1280-channel head convolution; the first seven stages are frozen), each training image
has `--views` fixed augmented views (RandomResizedCrop 96, scale 0.16-1, flip), and the frozen stages' outputs of
those views are cached once (`backbone.cache`, f16) and shared by every run (`backbone.cache_dir`, `views_seed` 0):
seeds change the initialisation, the batches and which view an image shows in an epoch, not the views themselves.
Batches of 64 = 16 classes x 4 (the contextual paper's m-per-class sampler), Adam, the backbone at half the head's
learning rate (the P256 rule), frozen BatchNorm statistics.

Protocol (no selection on the test classes):
1. tune: on a class-disjoint split of the *training* classes (no images.val_root: the folder layout's split of
   data/emoji10/train), seed 0, each method with each lr of --lrs for --max-epochs epochs of 40 batches,
   validated every --eval-every epochs. Each method gets its own best (lr, epochs) by validation MAP@R.
2. final: each method on all 530 training classes with its (lr, epochs), epochs of 80 batches (one pass over the
   twice larger set, as a tuning epoch is one pass over its half), seeds 0, 1, 2, evaluated once, at the last
   epoch, on the 5,261 test images (leave-one-out cosine retrieval); the script asserts one validated epoch.
Prints Markdown tables: mean over seeds with a 95% Student-t interval, and the paired difference
contextual - each method over the seeds (same seed = same initialisation, batches and views).

    scripts/build_emoji10.sh 96 8
    python3 bench/emoji10_finetune.py --out /tmp/emoji10-ft
Standard library only; SIMLEARN_BIN overrides the binary (default target/release/simlearn).
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

from emoji10_heads import HEAD, METRICS, summary  # the heads benchmark's metrics and seed interval

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
WEIGHTS = "crates/simlearn/tests/fixtures/weights/efficientnet-lite0-57934424.pth"
METHODS = {
    "contrastive": ('name = "contrastive"', "contrastive"),
    "triplet": ('name = "triplet"            # distance-weighted miner (default)', "triplet (distance-weighted)"),
    "multi_similarity": ('name = "multi_similarity"', "multi-similarity"),
    "smooth_ap": ('name = "smooth_ap"', "Smooth-AP"),
    "contextual": ('name = "contextual"', "contextual hybrid"),
    "contextual_no_ctx": ('name = "contextual"\nlambda = 0.0               # ablation: no contextual term',
                          "hybrid without the contextual term (ablation)"),
}


def config(method, lr, epochs, seed, eval_every, tune, a, cache_dir, lists=None, tries=5, note=""):
    """`lists`: (train list, test list) files of `path label` lines relative to data/emoji10 (the robustness
    benchmark's corrupted training sets) instead of the folders; `tries`: passes of the m-per-class sampler."""
    if lists:
        data = f'layout = "list"\nroot = "data/emoji10"\nlist = "{lists[0]}"\nval_list = "{lists[1]}"\n'
    else:
        val = "" if tune else 'val_root = "data/emoji10/test"   # the 529 held-out classes, evaluated once (last epoch)\n'
        data = f'layout = "folder"\nroot = "data/emoji10/train"\n{val}'
    batches = 40 if tune else 80
    return f"""# Emoji-10 fine-tuning (bench/emoji10_finetune.py): {METHODS[method][1]}{note}.
[data]
source = "images"

[images]
{data}size = 96
min_scale = 0.16
flip = 0.5
resize = 96
crop = 96
normalize = "half"

[backbone]
arch = "efficientnet_lite0"
weights = "{WEIGHTS}"
pooling = "avg"
batch_norm = "frozen_stats"
train_stages = {a.train_stages}
views = {a.views}
views_seed = 0
cache = true
cache_dir = "{cache_dir}"

[model]
output_dim = 512

[loss]
{METHODS[method][0]}

[sampler]
batch_size = 64
samples_per_class = 4
tries = {tries}
max_batches = {batches}

[optim]
kind = "adam"
lr = {lr:g}
backbone_lr_mult = 0.5

[train]
epochs = {epochs}
eval_every = {eval_every}
seed = {seed}
select_metric = "map_at_r"
"""


def train(text, run_dir, log):
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir.parent / f"{run_dir.name}.toml"
    cfg.write_text(text)
    t = time.time()
    p = subprocess.run([str(BIN), "train", "--config", str(cfg), "--out", str(run_dir), "--json"],
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        log(p.stderr[-2000:])
        raise SystemExit(f"simlearn train failed for {cfg}")
    recs = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return recs, time.time() - t


def fmt(mean, h):
    return f"{mean:.4f}" + (f" ± {h:.4f}" if h is not None else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/emoji10-ft")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lrs", default="1e-4,3e-4")
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=3)
    ap.add_argument("--train-stages", type=int, default=2)
    ap.add_argument("--views", type=int, default=4)
    a = ap.parse_args()
    out = Path(a.out).resolve()
    methods = a.methods.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    lrs = [float(x) for x in a.lrs.split(",")]
    log = lambda *m: print(*m, file=sys.stderr, flush=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("tune", {})
    results.setdefault("final", {})
    results.setdefault("seconds", {})
    results["settings"] = vars(a)
    save = lambda: (out.mkdir(parents=True, exist_ok=True), results_path.write_text(json.dumps(results, indent=1)))

    # 1. tune on the class-disjoint split of the training classes; runs already in results.json are kept
    chosen = {}
    for m in methods:
        best = None
        for lr in lrs:
            key = f"{m}/lr{lr:g}"
            if key not in results["tune"]:
                recs, s = train(config(m, lr, a.max_epochs, 0, a.eval_every, True, a, out / "cache-tune"),
                                out / "tune" / f"{m}-lr{lr:g}", log)
                results["tune"][key] = {str(r["epoch"] + 1): r["validation"]["map_at_r"] for r in recs if r.get("validation")}
                results["seconds"]["tune/" + key] = s
                save()
                log(f"tune {key} ({s:.0f}s): " + " ".join(f"{e}:{v:.4f}" for e, v in results["tune"][key].items()))
            for e, v in results["tune"][key].items():
                if best is None or v > best[0] or (v == best[0] and int(e) < best[2]):
                    best = (v, lr, int(e))
        chosen[m] = {"lr": best[1], "epochs": best[2], "val_map_at_r": best[0]}
        log(f"chosen for {m}: lr={best[1]:g}, epochs={best[2]} (val MAP@R {best[0]:.4f})")
    results["chosen"] = chosen
    save()

    # 2. final: all training classes, evaluated once on the test classes at the last epoch
    for m in methods:
        lr, epochs = chosen[m]["lr"], chosen[m]["epochs"]
        for s in seeds:
            key = f"{m}/s{s}"
            if key in results["final"] and results["final"][key].get("lr") == lr and results["final"][key].get("epochs") == epochs:
                continue
            recs, sec = train(config(m, lr, epochs, s, epochs, False, a, out / "cache-final"),
                              out / "final" / f"{m}-s{s}", log)
            validated = [r for r in recs if r.get("validation")]
            assert len(validated) == 1 and validated[0]["epoch"] == epochs - 1, "only the last epoch may be evaluated"
            results["final"][key] = {x: validated[0]["validation"][x] for x in METRICS}
            results["final"][key].update(lr=lr, epochs=epochs, seconds=sec,
                                         step_seconds=statistics.fmean(r["seconds"] for r in recs) / (80.0))
            save()
            log(f"final {key} ({sec:.0f}s): " + " ".join(f"{x}={results['final'][key][x]:.4f}" for x in METRICS))

    fin = results["final"]
    print("| method | lr, epochs (tuned) | " + " | ".join(HEAD) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for m in methods:
        cells = [fmt(*summary([fin[f"{m}/s{s}"][x] for s in seeds])) for x in METRICS]
        print(f"| {METHODS[m][1]} | {chosen[m]['lr']:g}, {chosen[m]['epochs']} | " + " | ".join(cells) + " |")
    if "contextual" in methods:
        print("\nPaired difference contextual hybrid - method (mean over seeds ± 95% t half-width; same seed, same "
              "initialisation, batches and views):\n")
        print("| method | " + " | ".join(f"Δ {h}" for h in HEAD) + " |")
        print("|---|" + "---|" * len(METRICS))
        for m in methods:
            if m == "contextual":
                continue
            cells = [fmt(*summary([fin[f"contextual/s{s}"][x] - fin[f"{m}/s{s}"][x] for s in seeds])) for x in METRICS]
            print(f"| {METHODS[m][1]} | " + " | ".join(cells) + " |")
    print("\nTuning (validation MAP@R on the held-out half of the training classes, seed 0, best epoch count):\n")
    print("| method | " + " | ".join(f"lr {x:g}" for x in lrs) + " |")
    print("|---|" + "---|" * len(lrs))
    for m in methods:
        cells = []
        for x in lrs:
            c = results["tune"][f"{m}/lr{x:g}"]
            e = max(c, key=lambda k: (c[k], -int(k)))
            cells.append(f"{c[e]:.4f} (at {e})")
        print(f"| {METHODS[m][1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
