#!/usr/bin/env python3
"""From a simlearn index into a real vector database, end to end, and back.

1. Makes two exact simlearn indexes (or takes yours with --index):
   - `demo`: `simlearn demo`'s index of its trained contextual head on the unseen digit classes
     (891 x 64, labels, PNG payload paths);
   - `clusters`: N x D vectors from a committed-seed Gaussian mixture (labels = component).
2. Exports each with `simlearn index export --parquet` (id, vector, label, path).
3. Starts Chroma's server from its PyPI package (`chroma run`, 127.0.0.1 only, telemetry off),
   upserts the Parquet rows (pyarrow) into a cosine collection, and queries it.
4. Queries `simlearn search --index DIR --vector Q.npy --json` with the same vectors and checks
   that Chroma's top k ids equal simlearn's (as sets, and in order) and that Chroma's cosine
   distances equal 1 - simlearn's scores.

Prints one JSON object; exits 1 when the top-k sets agree on fewer than --min-agreement of the
queries. Needs: pip install chromadb pyarrow numpy; a built `target/release/simlearn`.

    python bench/export_chroma.py                  # both indexes
    python bench/export_chroma.py --index my-index # yours (cosine similarity)
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SIMLEARN = ROOT / "target" / "release" / "simlearn"


def sh(*args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_demo_index(work):
    out = work / "demo"
    sh(SIMLEARN, "demo", "--out", out, "--json")
    return out / "index"


def make_cluster_index(work, n, d, seed):
    rng = np.random.default_rng(seed)
    comps = 200
    centres = rng.standard_normal((comps, d)).astype(np.float32)
    labels = rng.integers(0, comps, n)
    x = centres[labels] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    np.save(work / "clusters.npy", x.astype(np.float32))
    np.save(work / "clusters_labels.npy", labels.astype(np.int64))
    out = work / "clusters-index"
    sh(SIMLEARN, "index", "build", "--embeddings", work / "clusters.npy",
       "--labels", work / "clusters_labels.npy", "--out", out)
    return out


def start_chroma(path):
    port = free_port()
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False", CHROMA_TELEMETRY="False")
    chroma = Path(sys.executable).parent / "chroma"
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    import chromadb
    from chromadb.config import Settings

    for _ in range(120):
        try:
            # The client connects on creation, so it is made once the server listens.
            client = chromadb.HttpClient(host="127.0.0.1", port=port,
                                         settings=Settings(anonymized_telemetry=False))
            client.heartbeat()
            return proc, client, port
        except Exception:
            if proc.poll() is not None:
                sys.exit(f"error: chroma run exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    proc.kill()
    sys.exit("error: chroma run did not answer its heartbeat within 60 s")


def check(name, index, client, work, queries, k, seed, ef):
    parquet = work / f"{name}.parquet"
    t0 = time.perf_counter()
    exp = json.loads(sh(SIMLEARN, "index", "export", "--index", index, "--parquet", parquet,
                        "--json"))
    export_s = time.perf_counter() - t0
    table = pq.read_table(parquet)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("simlearn.similarity") != "cosine":
        sys.exit(f"error: {index}: similarity {meta.get('simlearn.similarity')}, "
                 "this script compares cosine indexes")
    ids = table.column("id").to_numpy()
    vecs = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    cols = table.column_names
    metas = [{} for _ in ids]
    if "label" in cols:
        for m, l in zip(metas, table.column("label").to_pylist()):
            m["label"] = int(l)
    if "path" in cols:
        for m, p in zip(metas, table.column("path").to_pylist()):
            m["path"] = p

    coll = client.create_collection(
        name=name,
        configuration={"hnsw": {"space": "cosine", "ef_construction": ef, "ef_search": ef,
                                "max_neighbors": 32}})
    t0 = time.perf_counter()
    batch = min(client.get_max_batch_size(), 4096)
    for s in range(0, len(ids), batch):
        e = slice(s, s + batch)
        kw = {"metadatas": metas[e]} if metas[0] else {}
        coll.upsert(ids=[str(i) for i in ids[e]], embeddings=vecs[e], **kw)
    upsert_s = time.perf_counter() - t0
    if coll.count() != len(ids):
        sys.exit(f"error: chroma holds {coll.count()} rows of {len(ids)}")

    # Queries: stored vectors, slightly perturbed (no exact self-match, no ties by construction).
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    q = vecs[rows] + 0.05 * np.abs(vecs[rows]).mean() * rng.standard_normal(
        (len(rows), vecs.shape[1])).astype(np.float32)
    q = q.astype(np.float32)
    np.save(work / f"{name}_q.npy", q)
    ours = json.loads(sh(SIMLEARN, "search", "--index", index, "--vector", work / f"{name}_q.npy",
                         "-k", k, "--json"))["queries"]
    t0 = time.perf_counter()
    theirs = coll.query(query_embeddings=q, n_results=k, include=["distances", "metadatas"])
    query_s = time.perf_counter() - t0
    same_set = same_order = 0
    max_dist_err = 0.0
    label_mismatch = 0
    for qi, hits in enumerate(ours):
        a = [h["id"] for h in hits["hits"]]
        b = [int(i) for i in theirs["ids"][qi]]
        same_set += set(a) == set(b)
        same_order += a == b
        score = {h["id"]: h["score"] for h in hits["hits"]}
        for i, dist, m in zip(b, theirs["distances"][qi], theirs["metadatas"][qi]):
            if i in score:
                max_dist_err = max(max_dist_err, abs(dist - (1.0 - score[i])))
            lab = next((h.get("label") for h in hits["hits"] if h["id"] == i), None)
            if lab is not None and m and m.get("label") != lab:
                label_mismatch += 1
    n = len(ours)
    return {
        "index": str(index),
        "rows": int(exp["rows"]),
        "dim": int(exp["dim"]),
        "parquet_mb": round(exp["bytes"] / 1e6, 2),
        "export_s": round(export_s, 3),
        "chroma_upsert_s": round(upsert_s, 2),
        "chroma_query_s": round(query_s, 3),
        "queries": n,
        "k": k,
        "topk_set_equal": same_set / n,
        "topk_order_equal": same_order / n,
        "max_abs_distance_minus_1_minus_score": max_dist_err,
        "label_mismatches": label_mismatch,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, action="append",
                    help="cosine simlearn index folder(s); default: the demo's and a 20k x 128 one")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--ef", type=int, default=512, help="Chroma's ef_construction = ef_search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-agreement", type=float, default=1.0)
    a = ap.parse_args()
    if not SIMLEARN.exists():
        sys.exit(f"error: {SIMLEARN} not found: run `cargo build --release` first")
    import chromadb

    with tempfile.TemporaryDirectory(prefix="simlearn-chroma-") as tmp:
        work = Path(tmp)
        indexes = a.index or [make_demo_index(work),
                              make_cluster_index(work, a.rows, a.dim, a.seed)]
        proc, client, port = start_chroma(work / "chroma")
        try:
            results = [check(f"simlearn{i}", idx, client, work, a.queries, a.k, a.seed, a.ef)
                       for i, idx in enumerate(indexes)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = {"chromadb": chromadb.__version__, "server": f"chroma run on 127.0.0.1:{port}",
           "results": results}
    print(json.dumps(out, indent=2))
    worst = min(r["topk_set_equal"] for r in results)
    sys.exit(0 if worst >= a.min_agreement else 1)


if __name__ == "__main__":
    main()
