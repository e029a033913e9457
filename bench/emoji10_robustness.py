#!/usr/bin/env python3
"""Emoji-10 robustness (issue 11, item 5): the contextual paper's claims that its hybrid loss is more robust to label
noise and to less training data, tested with the fine-tuning comparison's budget (bench/emoji10_finetune.py).

Methods: the contextual hybrid, contrastive and multi-similarity, each with the (lr, epochs) it won in the comparison's
tuning on the class-disjoint split of the training classes (BENCHMARKS.md, "Emoji-10: partial fine-tuning
comparison"; not retuned per condition, as a user who does not know the noise level would not).

Conditions, each a `path label` list of data/emoji10/train (the folder's images in the folder's order):
- clean: every training image with its class;
- flip10 / flip25: 10% / 25% of the training images (drawn with the run's seed) relabelled to another training class,
  uniformly;
- keep50 / keep25: all images of 50% / 25% of the training classes (drawn with the run's seed). The optimisation budget
  stays the same: the m-per-class sampler's `tries` is raised so that every epoch still has 80 batches (keep50: 265
  classes -> 16 groups x 5 tries; keep25: 132 classes -> 8 groups x 10 tries), only the data shrinks.
Every run is evaluated once, at its last epoch, on the 5,261 images of the 529 test classes (leave-one-out cosine).
Label flips do not change the images, so they share the clean runs' frozen-trunk cache; the kept subsets build their
own. Then, per method and seed, `simlearn report` over its five runs gives the degradation clean - condition with its
95% paired bootstrap interval over the test queries (1,000 resamples): the interval of one seed's test-set sampling,
not of the seed. With several seeds the mean degradation also gets a Student-t interval over seeds.
The claim itself is a difference of degradations: for the contextual hybrid and each baseline, (degradation of the
baseline) - (degradation of the contextual hybrid), per test query from the reports' per-query files (the same
queries in every run), with a 95% paired percentile bootstrap interval (1,000 resamples of the queries, seed 0).
Positive: the contextual hybrid lost less than the baseline under that condition, as the paper claims.
The tuned recipes differ (contrastive trains at a lower learning rate, longer), which may itself change robustness:
`--recipes contextual=1e-4:12,multi_similarity=1e-4:12` into another --out reruns them at contrastive's recipe.

    scripts/build_emoji10.sh 96 8
    RAYON_NUM_THREADS=2 python3 bench/emoji10_robustness.py --out /tmp/emoji10-robust [--seeds 0,1]
Standard library only; SIMLEARN_BIN overrides the binary (default target/release/simlearn).
"""
import argparse, csv, json, os, random, subprocess, sys
from pathlib import Path

from emoji10_finetune import BIN, METHODS, ROOT, config, train
from emoji10_heads import METRICS, summary

# (lr, epochs) chosen for each method by the comparison's tuning (BENCHMARKS.md).
RECIPES = {"contextual": (3e-4, 9), "contrastive": (1e-4, 12), "multi_similarity": (3e-4, 9)}
CONDITIONS = {
    "clean": ("clean", None),
    "flip25": ("25% labels flipped", ("flip", 0.25)),
    "keep25": ("25% of classes kept", ("keep", 0.25)),
    "flip10": ("10% labels flipped", ("flip", 0.10)),
    "keep50": ("50% of classes kept", ("keep", 0.50)),
}
ORDER = ["clean", "flip10", "flip25", "keep50", "keep25"]


def folder(split):
    """(relative path, class index) of every image of data/emoji10/<split>, in the folder layout's order."""
    base = ROOT / "data" / "emoji10" / split
    classes = sorted(p for p in os.listdir(base) if (base / p).is_dir())
    return [(f"{split}/{c}/{f}", k) for k, c in enumerate(classes) for f in sorted(os.listdir(base / c))
            if (base / c / f).is_file()]


def write_list(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {l}\n" for p, l in rows))


def corrupt(rows, how, seed):
    """The training rows of a condition; returns (rows, description)."""
    if how is None:
        return rows, "clean"
    kind, frac = how
    rng = random.Random(f"{kind}{frac}-{seed}")
    classes = sorted({l for _, l in rows})
    if kind == "flip":
        n = round(frac * len(rows))
        flipped = set(rng.sample(range(len(rows)), n))
        out = []
        for i, (p, l) in enumerate(rows):
            if i in flipped:
                l = rng.choice([c for c in classes if c != l])
            out.append((p, l))
        return out, f"{n} of {len(rows)} labels flipped"
    kept = set(rng.sample(classes, round(frac * len(classes))))
    out = [(p, l) for p, l in rows if l in kept]
    return out, f"{len(kept)} of {len(classes)} classes ({len(out)} images) kept"


def tries_for(rows, batch_classes=16, batches=80):
    groups = len({l for _, l in rows}) // batch_classes
    return max(5, -(-batches // groups))


def per_query(results, out, key):
    """{metric: [value of each test row]} of run `key`, from the per-query CSV of the report that holds it."""
    for rep in results["reports"].values():
        if key in rep["runs"]:
            doc = json.loads((Path(rep["html"]).parent / "report.json").read_text())
            run = doc["runs"][rep["runs"].index(key)]
            with open(Path(rep["html"]).parent / run["per_query"]) as f:
                rows = sorted(csv.DictReader(f), key=lambda r: int(r["row"]))
            return {m: [float(r[m]) for r in rows] for m in METRICS}, [int(r["row"]) for r in rows]
    raise KeyError(key)


def advantage(results, out, seed, base, cond, metric, resamples=1000, level=0.95):
    """Mean over test queries of (base_clean - base_cond) - (ctx_clean - ctx_cond) with its paired percentile
    bootstrap interval (the same resampled queries in all four runs)."""
    series, rows = [], None
    for m, c in [(base, "clean"), (base, cond), ("contextual", "clean"), ("contextual", cond)]:
        values, r = per_query(results, out, f"{c}-{m}-s{seed}")
        assert rows is None or r == rows, "the four runs must evaluate the same queries"
        rows = r
        series.append(values[metric])
    d = [bc - bx - (cc - cx) for bc, bx, cc, cx in zip(*series)]
    n = len(d)
    rng = random.Random(0)
    means = sorted(sum(d[i] for i in rng.choices(range(n), k=n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return sum(d) / n, (lo, hi)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/emoji10-robust")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default=",".join(RECIPES))
    ap.add_argument("--conditions", default=",".join(ORDER))
    ap.add_argument("--train-stages", type=int, default=2)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--recipes", default="", help="override (lr, epochs), e.g. contextual=1e-4:12,multi_similarity="
                    "1e-4:12, to separate a loss's robustness from its recipe's (into another --out: results.json "
                    "records each run's recipe and refuses a mismatch)")
    a = ap.parse_args()
    for item in filter(None, a.recipes.split(",")):
        try:
            m, v = item.split("=")
            lr, ep = v.split(":")
            recipe = (float(lr), int(ep))
        except ValueError:
            ap.error(f"--recipes: {item!r} is not method=lr:epochs (e.g. contextual=1e-4:12)")
        if m not in RECIPES:
            ap.error(f"--recipes: unknown method {m!r} (one of {', '.join(RECIPES)})")
        RECIPES[m] = recipe
    out = Path(a.out).resolve()
    seeds = [int(s) for s in a.seeds.split(",")]
    methods = a.methods.split(",")
    conditions = a.conditions.split(",")
    log = lambda *m: print(*m, file=sys.stderr, flush=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("runs", {})
    results.setdefault("reports", {})
    save = lambda: (out.mkdir(parents=True, exist_ok=True), results_path.write_text(json.dumps(results, indent=1)))

    train_rows, test_rows = folder("train"), folder("test")
    test_list = out / "lists" / "test.txt"
    write_list(test_list, test_rows)
    for s in seeds:  # seeds outer: a cut-short run still has every condition of the first seed
        for c in conditions:
            rows, desc = corrupt(train_rows, CONDITIONS[c][1], s)
            train_list = out / "lists" / f"{c}-s{s}.txt"
            write_list(train_list, rows)
            tries = tries_for(rows)
            for m in methods:
                key = f"{c}-{m}-s{s}"
                lr, epochs = RECIPES[m]
                if key in results["runs"]:
                    # Run keys do not name the recipe, so a run of another recipe must not pass for this one.
                    done = results["runs"][key].get("recipe")
                    if done is not None and tuple(done) != (lr, epochs):
                        sys.exit(f"error: {out}/results.json holds {key} at lr {done[0]:g}, {done[1]} epochs, not "
                                 f"{lr:g}, {epochs}: give this recipe another --out")
                    continue
                text = config(m, lr, epochs, s, epochs, False, a, out / "cache", lists=(train_list, test_list),
                              tries=tries, note=f"; robustness condition {c}: {desc}")
                recs, sec = train(text, out / "runs" / key, log)
                validated = [r for r in recs if r.get("validation")]
                assert len(validated) == 1 and validated[0]["epoch"] == epochs - 1, "only the last epoch is evaluated"
                results["runs"][key] = {x: validated[0]["validation"][x] for x in METRICS}
                results["runs"][key].update(condition=desc, tries=tries, batches=recs[0].get("batches"), seconds=sec,
                                            recipe=[lr, epochs])
                save()
                log(f"{key} ({sec:.0f}s, {desc}): " + " ".join(f"{x}={results['runs'][key][x]:.4f}" for x in METRICS))

    # Paired degradations: one report per method and seed over its runs (clean first).
    for s in seeds:
        for m in methods:
            keys = [f"{c}-{m}-s{s}" for c in conditions if f"{c}-{m}-s{s}" in results["runs"]]
            rkey = f"{m}-s{s}"
            if "clean" not in conditions or len(keys) < 2 or results["reports"].get(rkey, {}).get("runs") == keys:
                continue
            rdir = out / "reports" / rkey
            p = subprocess.run([str(BIN), "report", *[str(out / "runs" / k) for k in keys], "--out", str(rdir)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                log(p.stderr[-2000:])
                raise SystemExit(f"simlearn report failed for {rkey}")
            rep = json.loads((rdir / "report.json").read_text())
            deg = {}
            for cmp in rep["comparisons"]:
                if cmp["a"] != keys[0]:
                    continue
                cond = cmp["b"].split("-")[0]
                deg[cond] = {d["name"]: {"diff": d["diff"], "ci": d["ci"]} for d in cmp["metrics"]
                             if d["name"] in METRICS}
            results["reports"][rkey] = {"runs": keys, "degradation": deg, "html": str(rdir / "index.html")}
            save()

    runs = results["runs"]
    print("Recipes (lr, epochs): " + ", ".join(f"{METHODS[m][1]} {RECIPES[m][0]:g}, {RECIPES[m][1]}" for m in methods)
          + "\n")
    have = lambda c, m: [s for s in seeds if f"{c}-{m}-s{s}" in runs]
    print(f"MAP@R and R@1 on the 529 test classes (seeds {a.seeds}; mean ± 95% t over seeds where there are several):\n")
    print("| method | " + " | ".join(CONDITIONS[c][0] for c in conditions) + " |")
    print("|---|" + "---|" * len(conditions))
    for m in methods:
        cells = []
        for c in conditions:
            ss = have(c, m)
            if not ss:
                cells.append("–")
                continue
            mp, hp = summary([runs[f"{c}-{m}-s{s}"]["map_at_r"] for s in ss])
            r1, _ = summary([runs[f"{c}-{m}-s{s}"]["recall_at_1"] for s in ss])
            cells.append(f"{mp:.4f}" + (f" ± {hp:.4f}" if hp else "") + f" / {r1:.4f}")
        print(f"| {METHODS[m][1]} | " + " | ".join(cells) + " |")
    print("\nDegradation clean − condition (positive: the condition hurts), per seed, with the 95% paired bootstrap "
          "interval over the test queries:\n")
    print("| method | seed | " + " | ".join(f"{CONDITIONS[c][0]}: Δ MAP@R | Δ R@1" for c in conditions if c != "clean")
          + " |")
    print("|---|---|" + "---|---|" * (len(conditions) - 1))
    for m in methods:
        for s in seeds:
            deg = results["reports"].get(f"{m}-s{s}", {}).get("degradation", {})
            cells = []
            for c in conditions:
                if c == "clean":
                    continue
                for x in ["map_at_r", "recall_at_1"]:
                    d = deg.get(c, {}).get(x)
                    cells.append(f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" if d else "–")
            print(f"| {METHODS[m][1]} | {s} | " + " | ".join(cells) + " |")
    if "contextual" in methods and "clean" in conditions:
        print("\nRobustness advantage of the contextual hybrid: (baseline's degradation) − (contextual's degradation), "
              "per seed, with the 95% paired bootstrap interval over the test queries (positive: the contextual "
              "hybrid lost less):\n")
        others = [c for c in conditions if c != "clean"]
        print("| baseline | seed | " + " | ".join(f"{CONDITIONS[c][0]}: MAP@R | R@1" for c in others) + " |")
        print("|---|---|" + "---|---|" * len(others))
        for b in [m for m in methods if m != "contextual"]:
            for s in seeds:
                cells = []
                for c in others:
                    for x in ["map_at_r", "recall_at_1"]:
                        try:
                            v, (lo, hi) = advantage(results, out, s, b, c, x)
                            results.setdefault("advantage", {})[f"{b}-{c}-{x}-s{s}"] = {"diff": v, "ci": [lo, hi]}
                            cells.append(f"{v:+.4f} [{lo:+.4f}, {hi:+.4f}]")
                        except KeyError:
                            cells.append("–")
                print(f"| {METHODS[b][1]} | {s} | " + " | ".join(cells) + " |")
        save()
    if len(seeds) > 1:
        print("\nMean degradation over seeds ± 95% t half-width:\n")
        print("| method | " + " | ".join(f"{CONDITIONS[c][0]}: Δ MAP@R" for c in conditions if c != "clean") + " |")
        print("|---|" + "---|" * (len(conditions) - 1))
        for m in methods:
            cells = []
            for c in conditions:
                if c == "clean":
                    continue
                v = [results["reports"][f"{m}-s{s}"]["degradation"][c]["map_at_r"]["diff"] for s in seeds
                     if c in results["reports"].get(f"{m}-s{s}", {}).get("degradation", {})]
                mean, h = summary(v) if v else (None, None)
                cells.append("–" if mean is None else f"{mean:+.4f}" + (f" ± {h:.4f}" if h else ""))
            print(f"| {METHODS[m][1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
