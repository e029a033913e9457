#!/usr/bin/env python3
"""Emoji-10 sweep of the contextual hybrid (issue 11, item 6): why does it not win? Its neighbourhood size k, the
neighbourhood margin eps, the weight lambda of the contextual term and the batch composition (classes x samples per
class), one factor at a time around the paper's defaults (k = 4, eps = 0.05, lambda = 0.4, 16 x 4), on the
class-disjoint split of the *training* classes, never on the test classes.

Budget: the comparison's tuned recipe for the hybrid (bench/emoji10_finetune.py: lr 3e-4, 9 epochs of 40 batches of
64, Lite0's last 2 stages trained on cached frozen-trunk outputs of 4 views per image), seed 0, validated once at the
last epoch on the held-out half of the training classes. The defaults run again with seeds 1 and 2 to measure the
seed noise, and multi-similarity (the best method of the comparison's tuning) runs with the same seeds as the bar to
clear. When samples per class change, k follows them (the paper sets k to the samples per class).

    scripts/build_emoji10.sh 96 8
    RAYON_NUM_THREADS=2 python3 bench/emoji10_sweep.py --out /tmp/emoji10-sweep [--cache-dir /tmp/emoji10-robust/cache]
A cache directory of earlier runs of the same images and views (the fine-tuning or robustness benchmarks) is reused.
Standard library only; SIMLEARN_BIN overrides the binary (default target/release/simlearn).
"""
import argparse, json, statistics, sys
from pathlib import Path

from emoji10_finetune import config, train
from emoji10_heads import METRICS, summary

LR, EPOCHS = 3e-4, 9
# (name, [loss] lines, (batch classes, samples per class), seed)
DEFAULT = 'name = "contextual"'
POINTS = [("defaults", DEFAULT, (16, 4), 0)]
POINTS += [(f"k={k}", f"{DEFAULT}\nk = {k}", (16, 4), 0) for k in (2, 8)]
POINTS += [(f"eps={e:g}", f"{DEFAULT}\neps = {e}", (16, 4), 0) for e in (0.0, 0.1, 0.2)]
POINTS += [(f"lambda={l:g}", f"{DEFAULT}\nlambda = {l}", (16, 4), 0) for l in (0.2, 0.7, 0.9)]
POINTS += [(f"{c}x{m}", f"{DEFAULT}\nk = {m}", (c, m), 0) for c, m in ((32, 2), (8, 8))]
POINTS += [("defaults", DEFAULT, (16, 4), s) for s in (1, 2)]
POINTS += [("multi-similarity", 'name = "multi_similarity"', (16, 4), s) for s in (0, 1, 2)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/emoji10-sweep")
    ap.add_argument("--cache-dir", default=None, help="frozen-trunk cache to share (default: OUT/cache)")
    ap.add_argument("--train-stages", type=int, default=2)
    ap.add_argument("--views", type=int, default=4)
    a = ap.parse_args()
    out = Path(a.out).resolve()
    cache = Path(a.cache_dir).resolve() if a.cache_dir else out / "cache"
    log = lambda *m: print(*m, file=sys.stderr, flush=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    for name, loss, (classes, m), seed in POINTS:
        key = f"{name}-s{seed}"
        if key in results:
            continue
        text = config("contextual", LR, EPOCHS, seed, EPOCHS, True, a, cache, note=f"; sweep point {name}")
        text = text.replace('[loss]\nname = "contextual"', f"[loss]\n{loss}", 1)
        text = text.replace("batch_size = 64\nsamples_per_class = 4", f"batch_size = {classes * m}\n"
                            f"samples_per_class = {m}", 1)
        assert f"[loss]\n{loss}" in text and f"samples_per_class = {m}" in text
        recs, sec = train(text, out / "runs" / key.replace("=", "").replace("x", "by"), log)
        validated = [r for r in recs if r.get("validation")]
        assert len(validated) == 1 and validated[0]["epoch"] == EPOCHS - 1, "only the last epoch is evaluated"
        results[key] = {x: validated[0]["validation"][x] for x in METRICS}
        results[key]["seconds"] = sec
        out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        log(f"{key} ({sec:.0f}s): " + " ".join(f"{x}={results[key][x]:.4f}" for x in METRICS))

    def seeds_of(name):
        return [results[k] for k in results if k.rsplit("-s", 1)[0] == name]

    print("Validation on the held-out half of the training classes (seed 0 unless stated; lr 3e-4, 9 epochs):\n")
    print("| point | seeds | R@1 | MAP@R |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(p[0] for p in POINTS):
        rs = seeds_of(name)
        if not rs:
            continue
        cells = []
        for x in ["recall_at_1", "map_at_r"]:
            mean, h = summary([r[x] for r in rs])
            cells.append(f"{mean:.4f}" + (f" ± {h:.4f}" if h else ""))
        print(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    base = [r["map_at_r"] for r in seeds_of("defaults")]
    if len(base) > 1:
        print(f"\nSeed standard deviation of the defaults' MAP@R: {statistics.stdev(base):.4f} ({len(base)} seeds).")


if __name__ == "__main__":
    main()
