#!/usr/bin/env python3
"""HNSW side by side: simlearn-index (usearch + exact re-scoring) vs faiss `IndexHNSWFlat`.

Same unit-norm vectors, same M / efConstruction / efSearch, cosine = inner product, k = 10.
For each: build time (2 threads), recall@10 against the exact top 10 (faiss IndexFlatIP), and
queries/s with 1 and 2 threads (one batch of all queries, parallel over queries in both),
graph memory and the process's peak RSS. Each library runs in its own process.

    python bench/ann_vs_faiss.py gen            # data under /work/data/bench/ann (or $ANN_DATA)
    python bench/ann_vs_faiss.py run sop        # SOP-shaped 59,502 x 512, 1,000 queries
    python bench/ann_vs_faiss.py run m1         # 1M x 128 Gaussian mixture, 1,000 queries

`gen` needs the SOP-shaped set (`python bench/eval_sop_shape.py gen`). The Rust half is
`cargo bench -p simlearn-index --bench ann --no-run` (the binary is found under target/).
"""

import glob
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ANN_DATA", "/work/data/bench/ann"))
SOP = Path(os.environ.get("SOP_DATA", "/work/data/bench")) / "sop_embeddings.npy"
K = 10
QUERIES = 1000
PARAMS = {"m": 32, "ef_construction": 200, "ef_search": [16, 32, 64, 128, 256, 512, 1024]}
# ANN_EF=64,2048 overrides the efSearch sweep, ANN_M / ANN_EFC the graph.
if os.environ.get("ANN_EF"):
    PARAMS["ef_search"] = [int(x) for x in os.environ["ANN_EF"].split(",")]
PARAMS["m"] = int(os.environ.get("ANN_M", PARAMS["m"]))
PARAMS["ef_construction"] = int(os.environ.get("ANN_EFC", PARAMS["ef_construction"]))


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(base, q, k):
    import faiss

    faiss.omp_set_num_threads(2)
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    _, ids = flat.search(q, k)
    return ids.astype(np.int64)


def gen():
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # SOP-shaped: the committed generator's 60,502 x 512 set; 1,000 rows become queries.
    x = unit(np.load(SOP))
    qi = rng.choice(len(x), QUERIES, replace=False)
    keep = np.setdiff1d(np.arange(len(x)), qi)
    sets = {"sop": (x[keep], x[qi])}
    # 1M x 128: 20,000 Gaussian clusters of 50 points (noise 0.5 of the centre scale).
    comps, d, n = 20_000, 128, 1_000_000
    centres = rng.standard_normal((comps, d)).astype(np.float32)
    lab = rng.integers(0, comps, n + QUERIES)
    pts = np.empty((n + QUERIES, d), np.float32)
    for s in range(0, n + QUERIES, 100_000):
        e = min(s + 100_000, n + QUERIES)
        pts[s:e] = centres[lab[s:e]] + 0.5 * rng.standard_normal((e - s, d)).astype(np.float32)
    pts = unit(pts)
    sets["m1"] = (pts[:n], pts[n:])
    for name, (b, q) in sets.items():
        np.save(DATA / f"{name}_base.npy", b)
        np.save(DATA / f"{name}_query.npy", q)
        np.save(DATA / f"{name}_gt.npy", exact_topk(b, q, K).reshape(-1))
        print(f"{name}: base {b.shape}, queries {q.shape}, exact top {K} written")


def faiss_side(name):
    import faiss

    base = np.load(DATA / f"{name}_base.npy")
    q = np.load(DATA / f"{name}_query.npy")
    gt = np.load(DATA / f"{name}_gt.npy").reshape(len(q), K)
    faiss.omp_set_num_threads(2)
    index = faiss.IndexHNSWFlat(base.shape[1], PARAMS["m"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = PARAMS["ef_construction"]
    t = time.perf_counter()
    index.add(base)
    build_s = time.perf_counter() - t
    rows = []
    for ef in PARAMS["ef_search"]:
        index.hnsw.efSearch = ef
        qps, recall = {}, None
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            index.search(q, K)  # warm-up
            t = time.perf_counter()
            _, ids = index.search(q, K)
            qps[str(threads)] = len(q) / (time.perf_counter() - t)
            recall = float(np.mean([len(set(a) & set(b)) for a, b in zip(ids, gt)]) / K)
        rows.append({"ef_search": ef, "recall": recall, "qps": qps})
    # Graph = everything but the stored vectors.
    graph_mb = (faiss.serialize_index(index).nbytes - base.nbytes) / 1e6
    return {
        "library": f"faiss {faiss.__version__} IndexHNSWFlat",
        "n": len(base), "dim": base.shape[1], "queries": len(q), "k": K,
        "m": PARAMS["m"], "ef_construction": PARAMS["ef_construction"], "build_threads": 2,
        "build_s": build_s, "graph_mb": graph_mb, "search": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def rust_bin():
    found = sorted(glob.glob(str(ROOT / "target/release/deps/ann-*")), key=os.path.getmtime)
    found = [f for f in found if os.access(f, os.X_OK) and not f.endswith(".d")]
    if not found:
        sys.exit("error: build the Rust half first: cargo bench -p simlearn-index --bench ann --no-run")
    return found[-1]


def run(name):
    for f in ("base", "query", "gt"):
        if not (DATA / f"{name}_{f}.npy").exists():
            sys.exit(f"error: {DATA / f'{name}_{f}.npy'} is missing: run `python {__file__} gen`")
    ours = json.loads(subprocess.run(
        [rust_bin(), "--base", DATA / f"{name}_base.npy", "--queries", DATA / f"{name}_query.npy",
         "--gt", DATA / f"{name}_gt.npy", "--k", str(K), "--m", str(PARAMS["m"]),
         "--ef-construction", str(PARAMS["ef_construction"]),
         "--ef-search", ",".join(map(str, PARAMS["ef_search"])), "--threads", "1,2"],
        check=True, capture_output=True, text=True).stdout)
    theirs = json.loads(subprocess.run(
        [sys.executable, __file__, "faiss", name], check=True, capture_output=True,
        text=True).stdout)
    print(f"\n{name}: {ours['n']} x {ours['dim']}, {ours['queries']} queries, k {K}, "
          f"M {PARAMS['m']}, efConstruction {PARAMS['ef_construction']}")
    for r in (ours, theirs):
        print(f"  {r['library']}: build {r['build_s']:.1f} s (2 threads), graph "
              f"{r['graph_mb']:.0f} MB, peak RSS {r['peak_rss_mb']:.0f} MB")
    print(f"  {'efSearch':>8} | {'recall simlearn':>15} {'faiss':>7} | "
          f"{'q/s 1t simlearn':>15} {'faiss':>8} | {'q/s 2t simlearn':>15} {'faiss':>8}")
    for a, b in zip(ours["search"], theirs["search"]):
        print(f"  {a['ef_search']:>8} | {a['recall']:>15.4f} {b['recall']:>7.4f} | "
              f"{a['qps']['1']:>15.0f} {b['qps']['1']:>8.0f} | "
              f"{a['qps']['2']:>15.0f} {b['qps']['2']:>8.0f}")
    print(json.dumps({"set": name, "simlearn": ours, "faiss": theirs}))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "gen":
        gen()
    elif len(sys.argv) == 3 and sys.argv[1] == "faiss":
        print(json.dumps(faiss_side(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(__doc__)
