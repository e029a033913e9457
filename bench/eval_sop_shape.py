#!/usr/bin/env python3
"""Side-by-side retrieval-evaluation benchmark: `simlearn eval` vs PML AccuracyCalculator vs faiss-cpu.

Data (synthetic, seeded, written to /work/data/bench/, never committed):

* ``sop``   shaped like Stanford Online Products' test split: 60,502 x 512 float32, 11,316 classes of 2..12
  items (mean 5.35, as in SOP), Gaussian clusters, L2-normalised, rows shuffled. Leave-one-out evaluation.
* ``scale`` 1,000,000 x 128 gallery (100,000 classes x 10 items) and 10,000 queries (one fresh draw from
  10,000 of those classes), L2-normalised. Separate query/gallery evaluation.

Contestants, each in its own process under ``/usr/bin/time -v`` (wall time and peak RSS of the whole process,
loading included):

* ``pml``      pytorch-metric-learning AccuracyCalculator (its default FaissKNN = exact IndexFlatL2), torch CPU
               and faiss limited to 2 threads, k = 100; precision_at_1, r_precision, mean_average_precision_at_r,
               plus R@{1,10,100} as custom ``calculate_*`` metrics on PML's own kNN labels (PML has no R@k).
* ``faiss``    faiss-cpu IndexFlatIP, add + search only, k = 101 in leave-one-out (the self-match is one of the
               101) and k = 100 with separate queries; the search alone is timed inside the process as well.
* ``simlearn`` ``simlearn eval --embeddings E --labels L [--query-embeddings Q --query-labels QL]
               --k 1,10,100 --json`` (release binary).

Usage::

    python bench/eval_sop_shape.py gen                  # data (about 1 minute)
    python bench/eval_sop_shape.py run --repeat 3       # every contestant, medians, ratios, metric check
    python bench/eval_sop_shape.py run --only simlearn --dataset scale

Results (every run, plus a summary with medians) go to /work/data/bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("SIMLEARN_BENCH_DATA", "/work/data/bench"))
RESULTS = DATA / "results"
ROOT = Path(__file__).resolve().parent.parent
SIMLEARN = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
THREADS = 2
KS = (1, 10, 100)

SOP_N, SOP_D, SOP_CLASSES = 60_502, 512, 11_316
SCALE_N, SCALE_D, SCALE_CLASSES, SCALE_Q = 1_000_000, 128, 100_000, 10_000


def files(dataset: str) -> dict[str, Path]:
    if dataset == "sop":
        return {"emb": DATA / "sop_embeddings.npy", "lab": DATA / "sop_labels.npy"}
    return {
        "emb": DATA / "scale_gallery.npy",
        "lab": DATA / "scale_gallery_labels.npy",
        "qemb": DATA / "scale_queries.npy",
        "qlab": DATA / "scale_query_labels.npy",
    }


# ---------------------------------------------------------------------------------------------------------------
# data generation


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def sop_class_sizes(rng: np.random.Generator) -> np.ndarray:
    """11,316 sizes in [2, 12] summing to exactly 60,502: 2 + Binomial(10, p) with the SOP mean, then +-1 fixes."""
    p = (SOP_N / SOP_CLASSES - 2) / 10
    sizes = 2 + rng.binomial(10, p, size=SOP_CLASSES)
    sizes[0] = 12  # SOP's largest classes have 12 images; make sure the maximum R (and k for MAP@R) is realistic
    while (diff := SOP_N - int(sizes.sum())) != 0:
        room = np.flatnonzero(sizes < 12) if diff > 0 else np.flatnonzero(sizes > 2)
        pick = rng.choice(room, size=min(abs(diff), room.size), replace=False)
        sizes[pick] += 1 if diff > 0 else -1
    return sizes


def gen(args) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(20261123)
    sizes = sop_class_sizes(rng)
    labels = np.repeat(np.arange(SOP_CLASSES, dtype=np.int64), sizes)
    centres = rng.standard_normal((SOP_CLASSES, SOP_D), dtype=np.float32)
    x = rng.standard_normal((SOP_N, SOP_D), dtype=np.float32)
    x *= np.float32(args.sop_spread)
    x += centres[labels]
    perm = rng.permutation(SOP_N)
    np.save(files("sop")["emb"], normalise_rows(x[perm]))
    np.save(files("sop")["lab"], labels[perm])
    print(f"sop: {SOP_N} x {SOP_D}, {SOP_CLASSES} classes, sizes {sizes.min()}..{sizes.max()}, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    per_class = SCALE_N // SCALE_CLASSES
    centres = rng.standard_normal((SCALE_CLASSES, SCALE_D), dtype=np.float32)
    glab = np.repeat(np.arange(SCALE_CLASSES, dtype=np.int64), per_class)
    g = rng.standard_normal((SCALE_N, SCALE_D), dtype=np.float32)
    g *= np.float32(args.scale_spread)
    g += centres[glab]
    perm = rng.permutation(SCALE_N)
    np.save(files("scale")["emb"], normalise_rows(g[perm]))
    np.save(files("scale")["lab"], glab[perm])
    del g
    qlab = rng.choice(SCALE_CLASSES, size=SCALE_Q, replace=False).astype(np.int64)
    q = rng.standard_normal((SCALE_Q, SCALE_D), dtype=np.float32)
    q *= np.float32(args.scale_spread)
    q += centres[qlab]
    np.save(files("scale")["qemb"], normalise_rows(q))
    np.save(files("scale")["qlab"], qlab)
    print(f"scale: gallery {SCALE_N} x {SCALE_D} ({SCALE_CLASSES} classes x {per_class}), {SCALE_Q} queries, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# workers (each runs in its own process under /usr/bin/time -v)


def limit_threads() -> None:
    import faiss
    import torch

    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)


def worker_pml(args) -> None:
    t_start = time.perf_counter()
    import torch
    from pytorch_metric_learning.utils import accuracy_calculator as ac

    limit_threads()

    class WithRecall(ac.AccuracyCalculator):
        """PML 2.x discovers ``calculate_*`` methods; R@k (>= 1 relevant item in the first k) on PML's kNN labels,
        lone queries excluded by PML's own mask."""

        def requires_knn(self):
            return super().requires_knn() + [f"recall_at_{k}" for k in KS]

        def _recall(self, k, knn_labels, query_labels, not_lone_query_mask, **kw):
            knn_labels, query_labels = ac.try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
            hits = (knn_labels[:, :k] == query_labels[:, None]).any(dim=1)
            return hits.double().mean().item()

        def calculate_recall_at_1(self, **kw):
            return self._recall(1, **kw)

        def calculate_recall_at_10(self, **kw):
            return self._recall(10, **kw)

        def calculate_recall_at_100(self, **kw):
            return self._recall(100, **kw)

    from pytorch_metric_learning.utils.inference import FaissKNN

    class TimedKNN(FaissKNN):
        """PML's default kNN (exact IndexFlatL2), timed, so the kNN share of PML's run can be reported."""

        seconds = 0.0

        def __call__(self, *a, **kw):
            t0 = time.perf_counter()
            out = super().__call__(*a, **kw)
            TimedKNN.seconds += time.perf_counter() - t0
            return out

    f = files(args.dataset)
    emb = torch.from_numpy(np.load(f["emb"]))
    lab = torch.from_numpy(np.load(f["lab"]))
    t_loaded = time.perf_counter()
    calc = WithRecall(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r",
                 "recall_at_1", "recall_at_10", "recall_at_100"),
        k=max(KS),
        device=torch.device("cpu"),
        knn_func=TimedKNN(),
    )
    if args.dataset == "sop":
        res = calc.get_accuracy(emb, lab)
    else:
        q = torch.from_numpy(np.load(f["qemb"]))
        ql = torch.from_numpy(np.load(f["qlab"]))
        res = calc.get_accuracy(q, ql, emb, lab, ref_includes_query=False)
    t_done = time.perf_counter()
    out = {
        "metrics": {
            "precision_at_1": res["precision_at_1"],
            "r_precision": res["r_precision"],
            "map_at_r": res["mean_average_precision_at_r"],
            **{f"recall_at_{k}": res[f"recall_at_{k}"] for k in KS},
        },
        "t_load_s": t_loaded - t_start,
        "t_eval_s": t_done - t_loaded,
        "t_knn_s": TimedKNN.seconds,
    }
    print(json.dumps(out))


def drop_self(idx: np.ndarray) -> np.ndarray:
    """PML's rule: remove the query's own index from its k + 1 list, or the last entry when it is absent."""
    mask = idx == np.arange(len(idx))[:, None]
    absent = ~mask.any(axis=1)
    mask[absent, -1] = True
    return idx[~mask].reshape(len(idx), idx.shape[1] - 1)


def class_metrics(idx: np.ndarray, qlab: np.ndarray, lab: np.ndarray, loo: bool) -> dict[str, float]:
    """P@1, R@k, R-precision and MAP@R (PML / MLRC definitions) from neighbour lists, lone queries excluded."""
    uniq, counts = np.unique(lab, return_counts=True)
    pos = np.searchsorted(uniq, qlab)
    found = (pos < uniq.size) & (uniq[np.minimum(pos, uniq.size - 1)] == qlab)
    r = np.where(found, counts[np.minimum(pos, uniq.size - 1)], 0) - (1 if loo else 0)
    keep = r > 0
    rel = (lab[idx] == qlab[:, None])[keep]
    r = r[keep]
    if r.max() > idx.shape[1]:
        raise ValueError("k smaller than the largest class: MAP@R would be wrong")
    ranks = np.arange(1, idx.shape[1] + 1)
    within_r = ranks[None, :] <= r[:, None]
    hits_r = rel & within_r
    prec = np.cumsum(hits_r, axis=1) / ranks[None, :]
    out = {
        "precision_at_1": float(rel[:, 0].mean()),
        "r_precision": float((hits_r.sum(axis=1) / r).mean()),
        "map_at_r": float(((prec * hits_r).sum(axis=1) / r).mean()),
    }
    for k in KS:
        if k <= idx.shape[1]:
            out[f"recall_at_{k}"] = float(rel[:, :k].any(axis=1).mean())
    return out


def worker_faiss(args) -> None:
    t_start = time.perf_counter()
    import faiss

    limit_threads()
    f = files(args.dataset)
    emb = np.load(f["emb"])
    queries = emb if args.dataset == "sop" else np.load(f["qemb"])
    k = max(KS) + 1 if args.dataset == "sop" else max(KS)
    t_loaded = time.perf_counter()
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    t_added = time.perf_counter()
    _, idx = index.search(queries, k)
    t_done = time.perf_counter()
    lab = np.load(f["lab"])
    if args.dataset == "sop":
        self_first = float((idx[:, 0] == np.arange(len(idx))).mean())
        idx = drop_self(idx)
        qlab = lab
    else:
        self_first = None
        qlab = np.load(f["qlab"])
    out = {
        # Metrics on faiss's inner-product ranking, outside the timed search (same formulas as PML's).
        "metrics": class_metrics(idx, qlab, lab, loo=args.dataset == "sop"),
        "self_first_fraction": self_first,
        "k": k,
        "t_load_s": t_loaded - t_start,
        "t_add_s": t_added - t_loaded,
        "t_search_s": t_done - t_added,
    }
    print(json.dumps(out))


def exact_check(args) -> None:
    """Reference values for the SOP set with float64 scores: faiss IndexFlatIP (f32) proposes 101 candidates per
    query, which are re-scored in float64 and re-sorted by (score desc, index asc). Differences of order 1e-6
    between implementations come from near ties that f32 rounding orders differently; this tells which side is
    nearer the exact ranking. Prints JSON."""
    import faiss

    limit_threads()
    f = files("sop")
    emb = np.load(f["emb"])
    lab = np.load(f["lab"])
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    _, idx = index.search(emb, max(KS) + 1)
    f32 = class_metrics(drop_self(idx), lab, lab, loo=True)
    e64 = emb.astype(np.float64)
    faiss_lists = drop_self(idx)
    rescored = np.empty_like(faiss_lists)
    rescored_sims = np.empty(rescored.shape)
    for s in range(0, len(idx), 512):
        blk = idx[s : s + 512]
        sims = np.einsum("qd,qkd->qk", e64[s : s + 512], e64[blk])
        sims[blk == np.arange(s, s + len(blk))[:, None]] = -np.inf  # self excluded by index
        order = np.lexsort((blk, -sims), axis=1)[:, :-1]
        rescored[s : s + len(blk)] = np.take_along_axis(blk, order, axis=1)
        rescored_sims[s : s + len(blk)] = np.take_along_axis(sims, order, axis=1)
    exact = class_metrics(rescored, lab, lab, loo=True)
    # Near ties that can move MAP@R: adjacent items inside the first R + 1 positions, of different relevance,
    # whose float64 scores differ by less than 1e-6 (f32 rounding of a 512-d unit dot product is about 1e-7).
    r = np.bincount(lab)[lab] - 1
    rel = lab[rescored] == lab[:, None]
    gap = rescored_sims[:, :-1] - rescored_sims[:, 1:]
    pos = np.arange(1, rescored.shape[1])
    near = (gap < 1e-6) & (rel[:, :-1] != rel[:, 1:]) & (pos[None, :] <= r[:, None])
    # MAP@R change (summed over queries, divided by n) if every such pair were swapped one at a time.
    swing = 0.0
    for q, p in zip(*np.nonzero(near)):
        alt = rescored[q].copy()
        alt[p - 1], alt[p] = alt[p], alt[p - 1]
        a = class_metrics(alt[None, :], lab[q : q + 1], lab, loo=True)["map_at_r"]
        b = class_metrics(rescored[q][None, :], lab[q : q + 1], lab, loo=True)["map_at_r"]
        swing += abs(a - b)
    print(json.dumps({
        "faiss_ip_f32": f32,
        "float64_rescored": exact,
        "rows_where_faiss_order_differs_from_float64": int((rescored != faiss_lists).any(axis=1).sum()),
        "near_tie_pairs_mixed_relevance_within_r": int(near.sum()),
        "map_at_r_max_shift_from_those_pairs": swing / len(lab),
    }, indent=2))


# ---------------------------------------------------------------------------------------------------------------
# driver


TIME_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)")
TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
TIME_USER = re.compile(r"User time \(seconds\): ([\d.]+)")
TIME_SYS = re.compile(r"System time \(seconds\): ([\d.]+)")


def parse_wall(s: str) -> float:
    parts = [float(p) for p in s.strip().split(":")]
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return secs


def find_metrics(obj) -> dict[str, float]:
    """Metric values from simlearn's --json output: a list of {name, value} objects or a name->value map, anywhere
    in the document."""
    found: dict[str, float] = {}

    def walk(o):
        if isinstance(o, dict):
            if "name" in o and "value" in o and isinstance(o["value"], (int, float)):
                found.setdefault(str(o["name"]), float(o["value"]))
            for key, val in o.items():
                if isinstance(val, (int, float)) and not isinstance(val, bool) and (
                    key.startswith(("precision_at", "recall_at", "map_at", "r_precision"))
                ):
                    found.setdefault(key, float(val))
                walk(val)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return found


def command(tool: str, dataset: str) -> list[str]:
    if tool == "simlearn":
        f = files(dataset)
        cmd = [str(SIMLEARN), "eval", "--embeddings", str(f["emb"]), "--labels", str(f["lab"])]
        if dataset == "scale":
            cmd += ["--query-embeddings", str(f["qemb"]), "--query-labels", str(f["qlab"])]
        return cmd + ["--k", ",".join(map(str, KS)), "--json"]
    return [sys.executable, str(Path(__file__).resolve()), f"worker-{tool}", "--dataset", dataset]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_one(tool: str, dataset: str, max_load: float) -> dict:
    waited = 0.0
    while load_average() > max_load and waited < 600:
        time.sleep(10)
        waited += 10
    load_before = load_average()
    cmd = ["/usr/bin/time", "-v"] + command(tool, dataset)
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               RAYON_NUM_THREADS=str(THREADS))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall_py = time.perf_counter() - t0
    rec = {
        "tool": tool,
        "dataset": dataset,
        "command": " ".join(command(tool, dataset)),
        "returncode": proc.returncode,
        "load1_before": load_before,
        "load1_after": load_average(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    m = TIME_WALL.search(proc.stderr)
    rec["wall_s"] = parse_wall(m.group(1)) if m else wall_py
    m = TIME_RSS.search(proc.stderr)
    rec["max_rss_mb"] = int(m.group(1)) / 1024 if m else None
    u, s = TIME_USER.search(proc.stderr), TIME_SYS.search(proc.stderr)
    rec["cpu_s"] = float(u.group(1)) + float(s.group(1)) if u and s else None
    if proc.returncode != 0:
        rec["stderr_tail"] = proc.stderr[-2000:]
        return rec
    try:
        doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        rec["stdout_tail"] = proc.stdout[-2000:]
        return rec
    if tool == "simlearn":
        rec["metrics"] = find_metrics(doc)
        rec["raw"] = doc
    else:
        rec.update(doc)
    return rec


def median(recs: list[dict], key: str):
    vals = [r[key] for r in recs if r.get(key) is not None and r.get("returncode") == 0]
    return statistics.median(vals) if vals else None


def summarise(all_recs: list[dict], dataset: str) -> dict:
    by_tool: dict[str, list[dict]] = {}
    for r in all_recs:
        by_tool.setdefault(r["tool"], []).append(r)
    summary = {"dataset": dataset, "tools": {}}
    for tool, recs in by_tool.items():
        ok = [r for r in recs if r["returncode"] == 0]
        summary["tools"][tool] = {
            "runs": len(recs),
            "ok": len(ok),
            "wall_s_median": median(recs, "wall_s"),
            "wall_s_all": [r["wall_s"] for r in ok],
            "max_rss_mb_median": median(recs, "max_rss_mb"),
            "cpu_s_median": median(recs, "cpu_s"),
            "load1_before": [r["load1_before"] for r in recs],
            "t_search_s_median": median(recs, "t_search_s"),
            "t_eval_s_median": median(recs, "t_eval_s"),
            "t_knn_s_median": median(recs, "t_knn_s"),
            "metrics": ok[0].get("metrics") if ok else None,
        }
    tools = summary["tools"]
    sl = tools.get("simlearn", {}).get("wall_s_median")
    ratios = {}
    if sl:
        for other in ("pml", "faiss"):
            o = tools.get(other, {})
            if o.get("wall_s_median"):
                ratios[f"{other}_wall_over_simlearn_wall"] = o["wall_s_median"] / sl
            if o.get("t_search_s_median"):
                ratios[f"simlearn_wall_over_{other}_search_only"] = sl / o["t_search_s_median"]
    summary["ratios"] = ratios
    if tools.get("simlearn", {}).get("metrics") and tools.get("pml", {}).get("metrics"):
        a, b = tools["simlearn"]["metrics"], tools["pml"]["metrics"]
        summary["metric_abs_diff_simlearn_vs_pml"] = {
            k: abs(a[k] - b[k]) for k in b if k in a
        }
    return summary


def run(args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tools = args.only.split(",") if args.only else (["pml", "faiss", "simlearn"] if args.dataset == "sop"
                                                    else ["faiss", "simlearn"])
    for ds in args.dataset.split(","):
        if not all(p.exists() for p in files(ds).values()):
            sys.exit(f"data for {ds} missing in {DATA}: run `gen` first")
    if "simlearn" in tools and not SIMLEARN.exists():
        sys.exit(f"{SIMLEARN} not built: cargo build --release -p simlearn-cli")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for ds in args.dataset.split(","):
        recs = []
        for rep in range(args.repeat):
            for tool in tools:
                rec = run_one(tool, ds, args.max_load)
                rec["repeat"] = rep
                recs.append(rec)
                brief = {k: rec.get(k) for k in ("tool", "wall_s", "max_rss_mb", "cpu_s", "load1_before",
                                                 "t_search_s", "t_eval_s", "t_knn_s", "returncode")}
                print(json.dumps(brief), flush=True)
                if rec["returncode"] != 0:
                    print(rec.get("stderr_tail", ""), file=sys.stderr)
        summary = summarise(recs, ds)
        (RESULTS / f"{ds}_{stamp}_runs.json").write_text(json.dumps(recs, indent=2))
        (RESULTS / f"{ds}_{stamp}_summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write the synthetic data sets")
    g.add_argument("--sop-spread", type=float, default=2.25,
                   help="noise std relative to N(0,1) centres (2.25: P@1 about 0.75, like a trained SOP model)")
    g.add_argument("--scale-spread", type=float, default=1.3, help="1.3: P@1 about 0.8")
    r = sub.add_parser("run", help="time the contestants")
    r.add_argument("--dataset", default="sop", help="sop, scale or sop,scale")
    r.add_argument("--only", default="", help="comma list of pml,faiss,simlearn")
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--max-load", type=float, default=1.0,
                   help="wait (up to 10 min) until the 1-minute load average is below this before each run")
    sub.add_parser("exact-check", help="float64 re-scoring of the SOP top-101 lists (reference metric values)")
    for name in ("worker-pml", "worker-faiss"):
        w = sub.add_parser(name)
        w.add_argument("--dataset", default="sop", choices=["sop", "scale"])
    args = ap.parse_args()
    {"gen": gen, "run": run, "exact-check": exact_check, "worker-pml": worker_pml,
     "worker-faiss": worker_faiss}[args.cmd](args)


if __name__ == "__main__":
    main()
