"""simlearn.evaluate / AccuracyCalculator / knn against the committed PML golden files
(PML 2.9.0 AccuracyCalculator with exact faiss kNN, scripts/make_pml_golden.py), the CLI,
and hand-checked invariants. numpy only; torch tensors are exercised when torch is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import simlearn
from simlearn import AccuracyCalculator, evaluate, knn, label_distances

from conftest import ROOT, GoldenSet, golden_sets

TOL = 1e-6
PML_KNN = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)


def close(got: float, want: float, what: str, tol: float = TOL) -> None:
    assert abs(got - want) <= tol, f"{what}: {got} vs PML {want} (diff {abs(got - want):.3e})"


def run_eval(s: GoldenSet, **kw) -> simlearn.EvalResult:
    if s.loo:
        return evaluate(s.embeddings, s.labels, **kw)
    return evaluate(s.embeddings, s.labels, query=s.query, query_labels=s.query_labels, **kw)


def run_calc(s: GoldenSet, calc: AccuracyCalculator, convert=lambda a: a) -> dict:
    if s.loo:
        return calc.get_accuracy(convert(s.embeddings), convert(s.labels))
    return calc.get_accuracy(
        convert(s.query), convert(s.query_labels), convert(s.embeddings), convert(s.labels), False
    )


# ---------------------------------------------------------------------------------------------
# evaluate() against the golden files


def test_golden_sets_are_present(sets):
    assert len(sets) >= 3


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_evaluate_primary_metrics(s: GoldenSet):
    e = s.expected
    r = run_eval(s)
    close(r["precision_at_1"], e["precision_at_1"], f"{s.name} precision_at_1")
    close(r["r_precision"], e["r_precision"], f"{s.name} r_precision")
    close(r["map_at_r"], e["mean_average_precision_at_r"], f"{s.name} map_at_r")
    assert r.report["n_lone"] == e["n_lone"]
    assert r.report["n_queries"] == e["n_queries"]
    assert r.report["n_evaluated"] + r.report["n_lone"] == r.report["n_queries"]
    # Default cut-offs and the CLI's metric order.
    assert list(r) == [
        "precision_at_1", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8",
        "r_precision", "map_at_r", "map_at_1", "map_at_2", "map_at_4", "map_at_8", "mrr",
    ]


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_evaluate_full_ranking_recall_map_mrr(s: GoldenSet):
    e = s.expected
    ks = [int(k) for k in e["recall_at_k"]] + [s.full_depth]
    r = run_eval(s, k=ks)
    assert r.report["neighbours"] == s.full_depth
    for k, v in e["recall_at_k"].items():
        close(r[f"recall_at_{k}"], v, f"{s.name} recall_at_{k}")
    # At K = full depth, min(K, R) = R: PML's mean_average_precision with k=None.
    close(r[f"map_at_{s.full_depth}"], e["mean_average_precision"], f"{s.name} MAP (full)")
    close(r["mrr"], e["mean_reciprocal_rank"], f"{s.name} mrr (PML float32)")
    close(r["mrr"], e["mean_reciprocal_rank_float64"], f"{s.name} mrr (float64)", 1e-12)


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_evaluate_max_bin_count_depth(s: GoldenSet):
    m = s.expected["at_max_bin_count"]
    r = run_eval(s, k=m["k"])
    assert r.report["neighbours"] == m["k"]
    close(r[f"map_at_{m['k']}"], m["mean_average_precision"], f"{s.name} MAP@max_bin_count")
    close(r["mrr"], m["mean_reciprocal_rank"], f"{s.name} MRR@max_bin_count")


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_evaluate_avg_of_avgs(s: GoldenSet):
    m = s.expected["avg_of_avgs"]
    r = run_eval(s, per_class=True)
    assert r.report["averaging"] == "macro"
    close(r["precision_at_1"], m["precision_at_1"], f"{s.name} macro P@1")
    close(r["r_precision"], m["r_precision"], f"{s.name} macro r_precision")
    close(r["map_at_r"], m["mean_average_precision_at_r"], f"{s.name} macro MAP@R")
    # The per-class table averages to the macro value; classes ascend.
    labels = [row["label"] for row in r.per_class]
    assert labels == sorted(labels)
    mean = np.mean([row["metrics"]["map_at_r"] for row in r.per_class])
    close(mean, m["mean_average_precision_at_r"], f"{s.name} mean of per-class MAP@R")


# ---------------------------------------------------------------------------------------------
# AccuracyCalculator against the golden files


@pytest.mark.parametrize("similarity", [None, "cosine"])
@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_calculator_k_none(s: GoldenSet, similarity):
    e = s.expected
    calc = AccuracyCalculator(exclude=("NMI", "AMI"), similarity=similarity)
    got = run_calc(s, calc)
    assert list(got) == [
        "mean_average_precision", "mean_average_precision_at_r", "mean_reciprocal_rank",
        "precision_at_1", "r_precision",
    ]
    for name in PML_KNN:
        close(got[name], e[name], f"{s.name} {name}")


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_calculator_max_bin_count(s: GoldenSet):
    e, m = s.expected, s.expected["at_max_bin_count"]
    got = run_calc(s, AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count"))
    close(got["mean_average_precision"], m["mean_average_precision"], f"{s.name} MAP")
    close(got["mean_reciprocal_rank"], m["mean_reciprocal_rank"], f"{s.name} MRR")
    for name in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        close(got[name], e[name], f"{s.name} {name}")


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_calculator_avg_of_avgs_and_per_class(s: GoldenSet):
    m = s.expected["avg_of_avgs"]
    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    got = run_calc(s, AccuracyCalculator(include=include, avg_of_avgs=True, k="max_bin_count"))
    close(got["precision_at_1"], m["precision_at_1"], f"{s.name} macro P@1")
    close(got["r_precision"], m["r_precision"], f"{s.name} macro r_precision")
    close(got["mean_average_precision_at_r"], m["mean_average_precision_at_r"], f"{s.name} macro MAP@R")
    per = run_calc(s, AccuracyCalculator(include=include, return_per_class=True, k="max_bin_count"))
    n_classes = len(np.unique(s.labels if s.loo else s.query_labels))
    for name, v in per.items():
        assert isinstance(v, list) and 0 < len(v) <= n_classes
        close(float(np.mean(v)), got[name], f"{s.name} mean of per-class {name}")


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_calculator_small_integer_k_matches_pml_definitions(s: GoldenSet):
    """k below the largest class: MAP and MRR over the first k neighbours, as PML's
    mean_average_precision / mean_reciprocal_rank, rebuilt here from knn() output."""
    k = 2
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = run_calc(s, AccuracyCalculator(exclude=("NMI", "AMI"), k=k))
    assert any("below the largest class" in str(x.message) for x in w)
    gallery, gl = s.embeddings, s.labels
    q, ql = (gallery, gl) if s.loo else (s.query, s.query_labels)
    idx, _ = knn(q, None if s.loo else gallery, k, "sqeuclidean")
    rel = gl[idx] == ql[:, None]
    r = np.array([(gl == l).sum() - int(s.loo) for l in ql])
    keep = r > 0
    rel, r = rel[keep], r[keep]
    first = np.where(rel.any(1), 1.0 / (rel.argmax(1) + 1), 0.0)
    prec = np.cumsum(rel, 1) / np.arange(1, k + 1)
    ap = (prec * rel).sum(1) / r
    close(got["mean_reciprocal_rank"], first.mean(), f"{s.name} MRR@{k}", 1e-12)
    close(got["mean_average_precision"], ap.mean(), f"{s.name} MAP@{k}", 1e-12)
    # R-based metrics stay exact (deeper retrieval than k).
    close(got["r_precision"], s.expected["r_precision"], f"{s.name} r_precision")


def test_calculator_query_gallery_through_pml_argument_order(sets):
    s = next(x for x in sets if not x.loo)
    calc = AccuracyCalculator(include=("precision_at_1",), k="max_bin_count")
    pos = calc.get_accuracy(s.query, s.query_labels, s.embeddings, s.labels, False)
    kw = calc.get_accuracy(
        query=s.query, query_labels=s.query_labels, reference=s.embeddings,
        reference_labels=s.labels, ref_includes_query=False,
    )
    assert pos == kw
    close(pos["precision_at_1"], s.expected["precision_at_1"], "P@1")


def test_calculator_ref_includes_query_with_reference_given(sets):
    s = next(x for x in sets if x.loo)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision"), k="max_bin_count")
    a = calc.get_accuracy(s.embeddings, s.labels)
    b = calc.get_accuracy(s.embeddings, s.labels, s.embeddings.copy(), s.labels.copy(), True)
    assert a == b
    with pytest.raises(ValueError, match="must be equal to query"):
        calc.get_accuracy(s.embeddings, s.labels, s.embeddings[::-1].copy(), s.labels, True)
    with pytest.raises(ValueError, match="reference to be the query set"):
        calc.get_accuracy(s.embeddings[:10], s.labels[:10], s.embeddings, s.labels, True)


def test_calculator_nmi_ami_are_reported(sets):
    s = next(x for x in sets if x.name == "clustered")
    got = AccuracyCalculator(include=("NMI", "AMI")).get_accuracy(s.embeddings, s.labels)
    assert list(got) == ["AMI", "NMI"]
    # 30 well-separated Gaussian classes: far above chance, at most 1.
    assert 0.5 < got["NMI"] <= 1.0 and 0.2 < got["AMI"] <= 1.0
    again = AccuracyCalculator(include=("NMI", "AMI")).get_accuracy(s.embeddings, s.labels)
    assert got == again


def test_calculator_constructor_checks_like_pml():
    with pytest.raises(ValueError, match="Primary metrics must be one or more of"):
        AccuracyCalculator(include=("recall_at_1",))
    with pytest.raises(TypeError, match="must be of type tuple"):
        AccuracyCalculator(include="precision_at_1")
    with pytest.raises(ValueError, match="mutually exclusive"):
        AccuracyCalculator(avg_of_avgs=True, return_per_class=True)
    for bad in (0, -3, "all", 2.5):
        with pytest.raises(ValueError, match="k must be an integer greater than 0"):
            AccuracyCalculator(k=bad)
    with pytest.raises(NotImplementedError, match="label_comparison_fn"):
        AccuracyCalculator(label_comparison_fn=lambda a, b: a == b)
    assert AccuracyCalculator(exclude=("AMI",)).get_curr_metrics() == [
        "NMI", "mean_average_precision", "mean_average_precision_at_r",
        "mean_reciprocal_rank", "precision_at_1", "r_precision",
    ]


def test_calculator_all_lone_queries_give_nan():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 3)).astype(np.float32)
    g = rng.normal(size=(6, 3)).astype(np.float32)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision"))
    with pytest.warns(UserWarning, match="None of the query labels"):
        got = calc.get_accuracy(q, np.array([7, 7, 8, 8]), g, np.array([0, 0, 0, 1, 1, 1]), False)
    assert all(np.isnan(v) for v in got.values())


def test_calculator_float_and_column_labels(sets):
    s = next(x for x in sets if x.name == "ties_lone")
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"))
    a = calc.get_accuracy(s.embeddings, s.labels)
    b = calc.get_accuracy(s.embeddings, s.labels.astype(np.float32)[:, None])
    assert a == b


def test_calculator_recognises_pml_knn_funcs():
    from simlearn._eval import _similarity_of_knn_func

    class FaissKNN:
        index_init_fn = None

    class CosineSimilarity:
        normalize_embeddings = True

    class LpDistance:
        normalize_embeddings = False
        p = 2

    class CustomKNN:
        def __init__(self, distance):
            self.distance = distance

    assert _similarity_of_knn_func(FaissKNN()) == "sqeuclidean"
    assert _similarity_of_knn_func(CustomKNN(CosineSimilarity())) == "cosine"
    assert _similarity_of_knn_func(CustomKNN(LpDistance())) == "sqeuclidean"
    with pytest.raises(ValueError, match="similarity="):
        AccuracyCalculator(knn_func=object())


# ---------------------------------------------------------------------------------------------
# input forms: layouts, dtypes, labels, torch tensors


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_layouts_and_dtypes_give_identical_values(s: GoldenSet):
    base = run_eval(s)
    for conv in (np.asfortranarray, lambda a: a.astype(np.float64), lambda a: np.asfortranarray(a.astype(np.float64))):
        t = GoldenSet(s.name, s.expected, conv(s.embeddings), s.labels,
                      None if s.loo else conv(s.query), s.query_labels)
        assert dict(run_eval(t)) == dict(base)
    # A strided view (every row, every column, through a wider buffer) is read in place.
    wide = np.zeros((len(s.embeddings), 2 * s.embeddings.shape[1]), np.float32)
    wide[:, ::2] = s.embeddings
    t = GoldenSet(s.name, s.expected, wide[:, ::2], s.labels, s.query, s.query_labels)
    assert dict(run_eval(t)) == dict(base)


@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_string_labels_equal_integer_labels(s: GoldenSet):
    base = run_eval(s, per_class=True)
    names = np.array([f"class-{v}" for v in s.labels])
    qn = None if s.loo else [f"class-{v}" for v in s.query_labels]
    r = evaluate(s.embeddings, names, query=s.query, query_labels=qn, per_class=True)
    # Classes are averaged in another order (text order), so only the last bits may differ.
    assert list(r) == list(base)
    for name in base:
        close(r[name], base[name], f"{s.name} {name}", 1e-12)
    assert all(isinstance(row["label"], str) for row in r.per_class)


def test_torch_tensors_are_accepted(sets):
    torch = pytest.importorskip("torch")
    for s in sets:
        calc = AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count")
        a = run_calc(s, calc)
        b = run_calc(s, calc, torch.from_numpy)
        assert a == b
        c = evaluate(torch.from_numpy(s.embeddings), torch.from_numpy(s.labels),
                     query=None if s.loo else torch.from_numpy(s.query),
                     query_labels=None if s.loo else torch.from_numpy(s.query_labels))
        assert dict(c) == dict(run_eval(s))


def test_import_does_not_import_torch():
    code = "import sys, simlearn; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------
# options: metrics, ci, continuous labels


def test_metric_selection_like_the_cli(sets):
    s = sets[0]
    r = run_eval(s, metrics="recall_at_k,map_at_r")
    assert list(r) == ["recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "map_at_r"]
    r = run_eval(s, metrics=["recall_at_4", "mrr"])
    assert list(r) == ["recall_at_4", "mrr"]
    with pytest.raises(ValueError, match='metrics: unknown metric "recal_at_1"'):
        run_eval(s, metrics=["recal_at_1"])
    r = run_eval(s, metrics=["nmi", "ami", "precision_at_1"])
    assert list(r) == ["precision_at_1", "nmi", "ami"]


def test_bootstrap_intervals(sets):
    s = sets[0]
    r = run_eval(s, ci=True, seed=3)
    assert set(r.ci) == set(r)
    for name, (lo, hi) in r.ci.items():
        assert lo <= r[name] <= hi, name
    assert run_eval(s, ci=True, seed=3).ci == r.ci
    assert r.report["bootstrap"] == {"resamples": 1000, "level": 0.95, "seed": 3}


def test_continuous_labels_hand_computed():
    # 1-D points and labels equal to the points: every ranking is ideal (nDCG 1) and the
    # nearest neighbour of 0 and 3 is at label distance 1, of 1 and 2 at 1.
    x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    r = evaluate(x, x[:, 0], continuous_labels=True, k=[1, 2])
    assert r["ndcg_at_1"] == pytest.approx(1.0) and r["ndcg_at_2"] == pytest.approx(1.0)
    assert r["mean_label_distance_at_1"] == pytest.approx(1.0)
    # distance@2: 0 → {1, 2}: 1.5; 1 → {0, 2}: 1; 2 → {1, 3}: 1; 3 → {2, 1}: 1.5
    assert r["mean_label_distance_at_2"] == pytest.approx(1.25)
    assert r.report["similarity"] == "sqeuclidean"
    with pytest.raises(ValueError, match="per_class needs class labels"):
        evaluate(x, x, continuous_labels=True, per_class=True)


# ---------------------------------------------------------------------------------------------
# errors: the CLI's one-line messages, as ValueError


def test_errors_are_value_errors_with_cli_messages():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    bad = x.copy()
    bad[3, 1] = np.nan
    cases = [
        (lambda: evaluate(bad, y), "embeddings: row 3 contains NaN or Inf (or a value outside the f32 range)"),
        (lambda: evaluate(x, y[:5]), "count mismatch: labels holds 5 labels but embeddings has 6 rows"),
        (lambda: evaluate(x, np.zeros(6, int)), "all labels belong to the single class 0; class retrieval metrics need at least two classes"),
        (lambda: evaluate(x, y, query=x[:, :3], query_labels=y), "dimension mismatch: query has dimension 3, embeddings has dimension 4"),
        (lambda: evaluate(x, y, query=bad, query_labels=y), "query: row 3 contains NaN"),
        (lambda: evaluate(x, y, k=[0]), "ks: k = 0 is not allowed (k ≥ 1)"),
        (lambda: evaluate(x, y, similarity="manhattan"), 'similarity: unknown similarity "manhattan": expected cosine, dot or sqeuclidean'),
        (lambda: evaluate(x[:0], y[:0]), "embeddings: no rows"),
        (lambda: evaluate(x, y.astype(float)), "labels: class labels must be integers or strings, got dtype float64"),
        (lambda: evaluate(x[0], y), "embeddings must be a 2-D array (n, d), got shape (4,)"),
        (lambda: evaluate(x, y, query=x), "query and query_labels go together"),
        (lambda: evaluate(np.array([[1e39]] * 6), y), "embeddings: row 0 contains NaN or Inf (or a value outside the f32 range)"),
        (lambda: knn(x, x, 7), "k = 7 exceeds the gallery size 6"),
        (lambda: knn(x, None, 6), "k = 6 but leave-one-out over 6 items allows at most k = 5"),
        (lambda: AccuracyCalculator().get_accuracy(bad, y), "query: row 3 contains NaN"),
        (lambda: AccuracyCalculator().get_accuracy(x, y, x, y[:4], False), "count mismatch: reference_labels holds 4 labels but reference has 6 rows"),
    ]
    for f, msg in cases:
        with pytest.raises(ValueError) as e:
            f()
        assert msg in str(e.value), f"{msg!r} not in {str(e.value)!r}"
        assert "\n" not in str(e.value)


def test_clamped_k_warns_like_the_cli(sets):
    s = sets[0]
    with pytest.warns(UserWarning, match="clamped to"):
        r = run_eval(s, k=[1, 100000])
    assert r.warnings and "exceeds the" in r.warnings[0]


# ---------------------------------------------------------------------------------------------
# knn and label_distances


@pytest.mark.parametrize("similarity", ["cosine", "dot", "sqeuclidean"])
def test_knn_is_the_exact_ranking_with_lower_index_ties(sets, similarity):
    s = next(x for x in sets if x.name == "ties_lone")
    x = s.embeddings.astype(np.float64)
    if similarity == "sqeuclidean":
        score = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    else:
        score = x @ x.T
        if similarity == "cosine":
            n = np.linalg.norm(x, axis=1)
            score = score / np.outer(n, n)
    k = 12
    idx, sc = knn(s.embeddings, s.embeddings, k, similarity)
    assert idx.dtype == np.int64 and sc.dtype == np.float32 and idx.shape == (len(x), k)
    for i in range(len(x)):
        order = sorted(range(len(x)), key=lambda j: (-score[i, j], j))[:k]
        assert list(idx[i]) == order, i
    np.testing.assert_allclose(sc, np.take_along_axis(score, idx, 1), atol=1e-6)
    # Leave-one-out: the same order without the query itself.
    loo, _ = knn(s.embeddings, None, k, similarity)
    for i in range(len(x)):
        order = sorted((j for j in range(len(x)) if j != i), key=lambda j: (-score[i, j], j))[:k]
        assert list(loo[i]) == order, i


def test_label_distances():
    y = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(label_distances(y), np.linalg.norm(y[:, None] - y[None], axis=-1), rtol=1e-6)
    np.testing.assert_allclose(label_distances(y, "manhattan"), np.abs(y[:, None] - y[None]).sum(-1))
    ang = np.array([10.0, 350.0, 180.0])
    d = label_distances(ang, "circular:360")
    assert d[0, 1] == pytest.approx(20.0) and d[0, 2] == pytest.approx(170.0)
    with pytest.raises(ValueError, match="label_distance: unknown"):
        label_distances(ang, "cosine")


# ---------------------------------------------------------------------------------------------
# the CLI: same names and values


def _cli() -> Path | None:
    p = Path(os.environ.get("SIMLEARN_BIN", ROOT / "target" / "release" / "simlearn"))
    return p if p.is_file() else None


@pytest.mark.skipif(_cli() is None, reason="no simlearn binary (build it with cargo build --release)")
@pytest.mark.parametrize("s", golden_sets(), ids=lambda s: s.name)
def test_same_report_as_simlearn_eval_json(s: GoldenSet):
    d = ROOT / "crates" / "simlearn-eval" / "tests" / "golden" / s.name
    cmd = [str(_cli()), "eval", "--embeddings", str(d / "embeddings.npy"), "--labels", str(d / "labels.npy"),
           "--k", "1,3,5", "--per-class", "--ci", "--json", "--seed", "7"]
    if not s.loo:
        cmd += ["--query-embeddings", str(d / "query_embeddings.npy"), "--query-labels", str(d / "query_labels.npy")]
    cli = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    py = run_eval(s, k=[1, 3, 5], per_class=True, ci=True, seed=7).report
    assert py == cli
