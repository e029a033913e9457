#!/usr/bin/env python3
"""Golden fixtures for simlearn-eval: retrieval metrics computed by pytorch-metric-learning (PML).

Writes one folder per embedding set under ``crates/simlearn-eval/tests/golden/<set>/``:

* ``embeddings.npy``  float32 n x d, L2-normalised here, stored exactly as PML received it
  (in query/gallery mode these are the *reference* (gallery) vectors);
* ``labels.npy``      int64, one class id per row of ``embeddings.npy``;
* ``query_embeddings.npy`` / ``query_labels.npy``  only in query/gallery mode;
* ``expected.json``   PML's ``AccuracyCalculator`` output plus bookkeeping (see below).

Sets
----
``clustered``   300 x 16 Gaussian clusters, 30 classes of 2..20 items, leave-one-out.
``ties_lone``   120 x 16 sign vectors with entries +-1/4 (norm exactly 1, every inner product an exact
                multiple of 1/8, so similarities are exact in f32 whatever the summation order): exact
                duplicates, massive score ties between relevant and irrelevant items, and classes of size 1
                (lone queries). Leave-one-out.
``query_gallery`` In-Shop style separate sets: 80 queries, 240 gallery items, ``ref_includes_query=False``;
                some query classes have no gallery member (lone queries).

How PML is run
--------------
PML's default kNN, ``FaissKNN`` (``faiss.IndexFlatL2``, exact), on the f32 unit vectors: on unit vectors the
squared L2 distance is 2 - 2 cos, so the ranking equals the cosine ranking. Two calculators are run:

* ``k=None``: the full ranking (n - 1 neighbours in leave-one-out, all gallery items otherwise). Every metric is
  exact; these are the top-level values in ``expected.json``. ``mean_average_precision`` is the sum of
  precision@i over every relevant position of the full ranking divided by R (= ordinary AP, since all R relevant
  items are retrieved); ``mean_reciprocal_rank`` is 1 / rank of the first relevant item in the full ranking.
* ``k="max_bin_count"``: the neighbour count PML recommends for MAP@R. P@1, R-precision and MAP@R must be (and
  are asserted to be) identical to the full-ranking run; its ``mean_average_precision`` (positions 1..k, still
  divided by R) and ``mean_reciprocal_rank`` (0 when no relevant item is in the first k) are stored under
  ``"at_max_bin_count"``.

A third run with ``avg_of_avgs=True`` (per-class mean, then mean over classes) is stored under ``"avg_of_avgs"``.
``recall_at_k`` (DML sense: at least one relevant item in the first k) is not a PML metric; it is computed here
from the neighbour lists PML's kNN returned, with PML's lone-query rule applied.

Lone queries: PML drops queries whose label has no other reference member from every kNN metric.
``n_lone`` is the number of such *queries*, ``n_lone_labels`` the number of distinct such labels.

Tie order: the script checks, row by row, that the neighbour lists PML used are exactly the lists sorted by
(similarity descending, reference index ascending), similarities recomputed in float64 from the stored f32
vectors (exact for ``ties_lone``). For the float sets it also rejects seeds whose rankings contain two items of
different relevance whose float64 similarities lie within ``NEAR_TIE`` of each other, so that any exact f32 kNN
(different summation order, renormalisation) must produce the same metric values.

Run: ``/work/venv/bin/python scripts/make_pml_golden.py`` (deterministic; overwrites the fixtures).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import faiss
import numpy as np
import pytorch_metric_learning
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "crates" / "simlearn-eval" / "tests" / "golden"
# Two float64 similarities closer than this count as a potential f32 tie (f32 rounding of a 16-d unit-vector dot
# product is ~1e-7; 1e-6 leaves a 10x margin).
NEAR_TIE = 1e-6
METRICS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "mean_average_precision",
)
RECALL_KS = (1, 2, 4, 8, 16)


class RecordingKNN:
    """PML's default FaissKNN (IndexFlatL2), remembering the neighbour indices it returned."""

    def __init__(self) -> None:
        self.inner = FaissKNN()
        self.indices: np.ndarray | None = None

    def __call__(self, query, k, reference=None, ref_includes_query=False):
        distances, indices = self.inner(query, k, reference, ref_includes_query)
        self.indices = indices.cpu().numpy().astype(np.int64)
        return distances, indices


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def expected_order(query: np.ndarray, ref: np.ndarray, loo: bool) -> list[np.ndarray]:
    """Reference indices per query sorted by (float64 similarity desc, index asc), self removed in LOO mode."""
    sims = query.astype(np.float64) @ ref.astype(np.float64).T
    idx = np.arange(ref.shape[0])
    out = []
    for q in range(query.shape[0]):
        order = np.lexsort((idx, -sims[q]))
        if loo:
            order = order[order != q]
        out.append(order)
    return out


def near_tie_conflicts(query, qlab, ref, rlab, loo: bool) -> int:
    """Rows whose ranking has items of different relevance inside one group of near-equal similarities
    (consecutive sorted similarities closer than NEAR_TIE, exact ties excluded only when all are equal)."""
    sims = query.astype(np.float64) @ ref.astype(np.float64).T
    bad = 0
    for q in range(query.shape[0]):
        keep = np.ones(ref.shape[0], dtype=bool)
        if loo:
            keep[q] = False
        s = sims[q][keep]
        rel = (rlab[keep] == qlab[q])
        order = np.argsort(-s, kind="stable")
        s, rel = s[order], rel[order]
        gaps = -np.diff(s)
        # A near tie (0 < gap < NEAR_TIE) between items of different relevance is the only thing that can make two
        # correct f32 implementations disagree; an exact tie (gap 0) is resolved by the index rule instead.
        group_start = 0
        for i, gap in enumerate(gaps, start=1):
            if gap >= NEAR_TIE:
                seg = slice(group_start, i)
                if _has_inexact_mixed(s[seg], rel[seg]):
                    bad += 1
                    break
                group_start = i
        else:
            seg = slice(group_start, len(s))
            if _has_inexact_mixed(s[seg], rel[seg]):
                bad += 1
    return bad


def _has_inexact_mixed(s: np.ndarray, rel: np.ndarray) -> bool:
    return len(s) > 1 and rel.min() != rel.max() and s.max() != s.min()


def run_pml(query, qlab, ref, rlab, loo: bool, k, avg_of_avgs=False):
    knn = RecordingKNN()
    calc = AccuracyCalculator(
        include=METRICS, k=k, avg_of_avgs=avg_of_avgs, device=torch.device("cpu"), knn_func=knn
    )
    if loo:
        res = calc.get_accuracy(query, qlab)
    else:
        res = calc.get_accuracy(query, qlab, ref, rlab, ref_includes_query=False)
    return {m: float(res[m]) for m in METRICS}, knn.indices


def lone_mask(qlab: np.ndarray, rlab: np.ndarray, loo: bool) -> np.ndarray:
    """True for queries PML drops: no other reference item shares the label."""
    counts = np.array([(rlab == lab).sum() for lab in qlab]) - (1 if loo else 0)
    return counts <= 0


def recall_at_k(indices: np.ndarray, qlab, rlab, lone: np.ndarray) -> dict[str, float]:
    hits = rlab[indices] == qlab[:, None]
    keep = ~lone
    return {str(k): float(hits[keep, :k].any(axis=1).mean()) for k in RECALL_KS if k <= indices.shape[1]}


def own_metrics(ranking: list[np.ndarray], qlab, rlab, lone: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """Independent re-implementation of the five PML metrics on full rankings (cross-check of PML's numbers)."""
    vals = {m: [] for m in METRICS}
    for q, order in enumerate(ranking):
        if lone[q]:
            continue
        rel = (rlab[order] == qlab[q]).astype(np.float64)
        prec = np.cumsum(rel) / np.arange(1, rel.size + 1)
        rq = int(r[q])
        vals["precision_at_1"].append(rel[0])
        vals["r_precision"].append(rel[:rq].sum() / rq)
        vals["mean_average_precision_at_r"].append((prec[:rq] * rel[:rq]).sum() / rq)
        vals["mean_average_precision"].append((prec * rel).sum() / rq)
        vals["mean_reciprocal_rank"].append(1.0 / (np.argmax(rel) + 1))
    return {m: float(np.mean(v)) for m, v in vals.items()}


def evaluate_set(
    name, query, qlab, ref, rlab, loo: bool, exact_scores: bool, description: str, extra: dict
) -> dict:
    full, full_idx = run_pml(query, qlab, ref, rlab, loo, k=None)
    binned, bin_idx = run_pml(query, qlab, ref, rlab, loo, k="max_bin_count")
    macro, _ = run_pml(query, qlab, ref, rlab, loo, k=None, avg_of_avgs=True)

    # PML's neighbour lists must follow the (score desc, index asc) rule the Rust kNN implements. With exact scores
    # the lists must be identical; with float scores, items of equal relevance closer than f32 rounding may swap
    # (that cannot change any metric), so there the relevance sequences must be identical.
    order = expected_order(query, ref, loo)
    mismatched_rows = 0
    for idx in (full_idx, bin_idx):
        for q in range(len(order)):
            want = order[q][: idx.shape[1]]
            if exact_scores:
                mismatched_rows += not np.array_equal(idx[q], want)
            else:
                mismatched_rows += not np.array_equal(rlab[idx[q]] == qlab[q], rlab[want] == qlab[q])
    if mismatched_rows:
        sys.exit(f"{name}: PML's kNN order differs from (score desc, index asc) in {mismatched_rows} rows")
    for m in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        if full[m] != binned[m]:
            sys.exit(f"{name}: {m} differs between k=None ({full[m]}) and k=max_bin_count ({binned[m]})")

    lone = lone_mask(qlab, rlab, loo)
    rcounts = np.array([(rlab == lab).sum() for lab in qlab]) - (1 if loo else 0)
    mine = own_metrics(order, qlab, rlab, lone, rcounts)
    for m in METRICS:
        # PML accumulates the reciprocal ranks in float32 (about 1e-7 off); everything else is float64.
        if abs(mine[m] - full[m]) > (1e-6 if m == "mean_reciprocal_rank" else 1e-12):
            sys.exit(f"{name}: {m}: PML {full[m]} but the script's own implementation gives {mine[m]}")
    if exact_scores:
        # The same metrics with ties broken the other way (higher reference index first): proves the set is
        # tie-sensitive, i.e. a kNN with the wrong tie rule fails the golden test.
        sims = query.astype(np.float64) @ ref.astype(np.float64).T
        reversed_order = []
        for q in range(query.shape[0]):
            o = np.lexsort((-np.arange(ref.shape[0]), -sims[q]))
            reversed_order.append(o[o != q] if loo else o)
        extra = {**extra, "if_ties_broken_by_higher_index": own_metrics(reversed_order, qlab, rlab, lone, rcounts)}
    out = {
        "description": description,
        "mode": "loo" if loo else "query_gallery",
        "ref_includes_query": loo,
        "n_queries": int(query.shape[0]),
        "n_reference": int(ref.shape[0]),
        "dim": int(query.shape[1]),
        "n_lone": int(lone.sum()),
        "n_lone_labels": int(len(np.unique(qlab[lone]))),
        "max_r": int(rcounts.max()),
        "k": "all (PML k=None: full ranking)",
        **full,
        "mean_reciprocal_rank_float64": mine["mean_reciprocal_rank"],
        "note_mrr": "PML computes reciprocal ranks in float32; mean_reciprocal_rank_float64 is the script's own "
        "float64 value on the same ranking (the other four metrics agree with PML to 1e-12)",
        "recall_at_k": recall_at_k(full_idx, qlab, rlab, lone),
        "at_max_bin_count": {
            "k": int(bin_idx.shape[1]),
            "mean_average_precision": binned["mean_average_precision"],
            "mean_reciprocal_rank": binned["mean_reciprocal_rank"],
        },
        "avg_of_avgs": {m: macro[m] for m in ("precision_at_1", "r_precision", "mean_average_precision_at_r")},
        "tie_rule": (
            "PML's FaissKNN(IndexFlatL2) neighbour lists were checked to equal (similarity desc, reference index "
            "asc) in every row"
            if exact_scores
            else "PML's FaissKNN(IndexFlatL2) neighbour lists were checked to have, in every row, the same relevance "
            "sequence as (float64 similarity desc, reference index asc); no near ties between items of different "
            f"relevance (gap < {NEAR_TIE})"
        ),
        "source": {
            "pytorch_metric_learning": pytorch_metric_learning.__version__,
            "torch": torch.__version__.split("+")[0],
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "knn": "FaissKNN (faiss.IndexFlatL2, exact), PML default",
            "script": "scripts/make_pml_golden.py",
        },
        **extra,
    }
    return out


def write_set(name: str, files: dict[str, np.ndarray], expected: dict) -> None:
    folder = GOLDEN / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npy"):
        if old.stem not in files:
            old.unlink()
    for stem, arr in files.items():
        np.save(folder / f"{stem}.npy", arr)
    with open(folder / "expected.json", "w") as fh:
        json.dump(expected, fh, indent=2)
        fh.write("\n")
    size = sum(p.stat().st_size for p in folder.iterdir())
    if size >= 100_000:
        sys.exit(f"{name}: fixture is {size} bytes, limit 100 KB")
    print(f"{name}: {size} bytes, P@1 {expected['precision_at_1']:.6f}, R-P {expected['r_precision']:.6f}, "
          f"MAP@R {expected['mean_average_precision_at_r']:.6f}, n_lone {expected['n_lone']}")


def clustered_classes(rng, sizes, dim, spread):
    centres = rng.standard_normal((len(sizes), dim))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[labels] + spread * rng.standard_normal((labels.size, dim))
    return x, labels


def make_clustered(seed: int):
    """(a) 30 Gaussian classes of 2..20 items, rows shuffled, labels non-contiguous ids."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 21, size=30)
    sizes = np.round(sizes * 300 / sizes.sum()).astype(int).clip(2, 20)
    x, lab = clustered_classes(rng, sizes, 16, 1.0)
    perm = rng.permutation(lab.size)
    ids = rng.choice(np.arange(100, 1000), size=len(sizes), replace=False)
    return l2_normalise(x[perm]), ids[lab[perm]].astype(np.int64)


def make_ties_lone(seed: int):
    """(b) +-1/4 sign vectors: classes = a prototype sign pattern with 0..4 flipped signs per member; exact
    duplicates of some members; 8 singleton classes (lone queries); classes share prototypes pairwise so
    items of different classes tie exactly with relevant ones."""
    rng = np.random.default_rng(seed)
    d = 16
    protos = rng.integers(0, 2, size=(10, d)) * 2 - 1
    rows, labs = [], []
    label = 0
    for p in protos:
        # Two classes per prototype: their members are equally close to the prototype, so cross-class ties
        # are everywhere in the ranking.
        for _ in range(2):
            size = int(rng.integers(2, 8))
            for _ in range(size):
                v = p.copy()
                flips = rng.choice(d, size=int(rng.integers(0, 5)), replace=False)
                v[flips] *= -1
                rows.append(v)
                labs.append(label)
            label += 1
    for _ in range(8):  # singleton classes: lone queries under PML's rule
        rows.append(rng.integers(0, 2, size=d) * 2 - 1)
        labs.append(label)
        label += 1
    rows = np.array(rows)
    labs = np.array(labs)
    # Exact duplicates (same class) of 12 non-singleton rows; at most one copy each, so a query and its copies never
    # outnumber the k + 1 = max_bin_count rows PML searches (the self-match is always found and removed by index).
    dup_src = rng.choice(np.flatnonzero(labs < label - 8), size=12, replace=False)
    rows = np.concatenate([rows, rows[dup_src]])
    labs = np.concatenate([labs, labs[dup_src]])
    # One duplicate across classes: identical vectors with different labels (an exact tie no order can hide).
    src = int(np.flatnonzero(labs == 0)[0])
    rows = np.concatenate([rows, rows[src : src + 1]])
    labs = np.concatenate([labs, [1]])
    perm = rng.permutation(labs.size)
    x = (rows[perm] * 0.25).astype(np.float32)  # +-1/4 in 16 dims: squared norm exactly 1
    ids = rng.choice(np.arange(-50, 500), size=label, replace=False)
    return x, ids[labs[perm]].astype(np.int64)


def make_query_gallery(seed: int):
    """(c) In-Shop style: 40 classes; each class splits into queries and gallery items; 3 classes have two
    queries and no gallery item (lone) and 5 only gallery items (distractors)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 12, size=40)
    x, lab = clustered_classes(rng, sizes, 16, 0.8)
    x = l2_normalise(x)
    is_query = np.zeros(lab.size, dtype=bool)
    for c in range(40):
        members = np.flatnonzero(lab == c)
        if c < 3:
            is_query[members[:2]] = True  # lone: queries without any gallery member (the rest is not used)
            lab[members[2:]] = -1
        elif c < 8:
            pass  # gallery-only distractor classes
        else:
            is_query[rng.choice(members, size=max(1, len(members) // 4), replace=False)] = True
    ids = rng.choice(np.arange(1000, 5000), size=40, replace=False)
    q_idx = rng.permutation(np.flatnonzero(is_query))
    g_idx = rng.permutation(np.flatnonzero(~is_query & (lab >= 0)))
    return x[q_idx], ids[lab[q_idx]].astype(np.int64), x[g_idx], ids[lab[g_idx]].astype(np.int64)


def first_clean_seed(make, check, start: int) -> tuple[int, tuple]:
    for seed in range(start, start + 200):
        data = make(seed)
        if check(data) == 0:
            return seed, data
    sys.exit(f"no seed without near ties in [{start}, {start + 200})")


def main() -> None:
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)

    seed, (x, lab) = first_clean_seed(make_clustered, lambda d: near_tie_conflicts(d[0], d[1], d[0], d[1], True), 1000)
    exp = evaluate_set(
        "clustered", x, lab, x, lab, True, False,
        "30 Gaussian classes (16-d centres N(0,1), spread 1.0) of 2..20 items, L2-normalised, shuffled; "
        "non-contiguous label ids. No near ties between items of different relevance (checked).",
        {"seed": seed},
    )
    write_set("clustered", {"embeddings": x, "labels": lab}, exp)

    x, lab = make_ties_lone(2000)
    sims = x.astype(np.float64) @ x.astype(np.float64).T
    if not np.all(np.round(sims * 8) == sims * 8):
        sys.exit("ties_lone: similarities are not exact multiples of 1/8")
    exp = evaluate_set(
        "ties_lone", x, lab, x, lab, True, True,
        "Entries +-1/4 in 16 dims (norm exactly 1; similarities exact multiples of 1/8, so f32 scores tie "
        "exactly whatever the summation order). Exact duplicates within classes, one identical vector under two "
        "labels, cross-class ties everywhere, 8 singleton classes (lone queries). Metric values depend on the "
        "tie order: ties broken by lower reference index (verified against PML's kNN output).",
        {"seed": 2000, "n_distinct_similarities": int(len(np.unique(sims)))},
    )
    write_set("ties_lone", {"embeddings": x, "labels": lab}, exp)

    seed, (q, ql, g, gl) = first_clean_seed(
        make_query_gallery, lambda d: near_tie_conflicts(d[0], d[1], d[2], d[3], False), 3000
    )
    exp = evaluate_set(
        "query_gallery", q, ql, g, gl, False, False,
        "In-Shop style separate query and gallery sets (ref_includes_query=False): 40 Gaussian classes, "
        "3 query-only classes of 2 queries (lone queries), 5 gallery-only distractor classes. embeddings.npy / labels.npy "
        "are the gallery (reference).",
        {"seed": seed},
    )
    write_set(
        "query_gallery",
        {"embeddings": g, "labels": gl, "query_embeddings": q, "query_labels": ql},
        exp,
    )


if __name__ == "__main__":
    main()
