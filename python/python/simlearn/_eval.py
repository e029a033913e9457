"""Retrieval evaluation on numpy arrays: :func:`evaluate`, :class:`AccuracyCalculator`,
:func:`knn`, :func:`label_distances`.

This module converts arguments (numpy arrays, CPU or CUDA torch tensors, lists; integer or
string labels) and hands them to the Rust engine in ``simlearn._native``; every metric value
comes from the engine (``simlearn-eval``), exactly as ``simlearn eval`` computes it.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import _native

_CLASS_FAMILIES = (
    "precision_at_1",
    "recall_at_k",
    "r_precision",
    "map_at_r",
    "map_at_k",
    "mrr",
    "nmi",
    "ami",
)
_CONTINUOUS_FAMILIES = ("ndcg_at_k", "mean_label_distance_at_k")
_DIGITS = re.compile(r"[0-9]+")


def _is_torch_tensor(x: Any) -> bool:
    # Duck-typed, so that importing simlearn never imports torch.
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "cpu")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch_tensor(x):
        # A CPU tensor shares its memory with the returned array; a CUDA one is copied to host.
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _float_matrix(x: Any, name: str) -> np.ndarray:
    """A 2-D float32/float64 view of ``x`` (no copy for float32/float64 input in any layout)."""
    a = _to_numpy(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        shape = "(" + ", ".join(str(s) for s in a.shape) + ("," if a.ndim == 1 else "") + ")"
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    elif not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _label_vector(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) or (n, 1), got {a.shape}")
    return a


def _encode_labels(
    arrays: Sequence[np.ndarray], names: Sequence[str], allow_float: bool
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """int64 label arrays in one label space, plus the original label of each id when the
    labels had to be encoded (strings, or floats where allowed); ``None`` for integers."""
    if all(a.dtype.kind in "iub" for a in arrays):
        return [a.astype(np.int64, copy=False) for a in arrays], None
    for a, name in zip(arrays, names):
        if a.dtype.kind == "f" and not allow_float:
            raise ValueError(
                f"{name}: class labels must be integers or strings, got dtype {a.dtype}; "
                "vector labels need continuous_labels=True"
            )
        if a.dtype.kind in "c":
            raise ValueError(f"{name}: class labels must be integers or strings, got dtype {a.dtype}")
    if all(a.dtype.kind in "iubf" for a in arrays):
        joint = np.concatenate([a.astype(np.float64) for a in arrays])
    else:
        # Mixed or string labels: equal text means equal class (as the CLI's label files).
        joint = np.concatenate([a.astype(str) for a in arrays])
    classes, inverse = np.unique(joint, return_inverse=True)
    inverse = inverse.astype(np.int64).reshape(-1)
    out, start = [], 0
    for a in arrays:
        out.append(inverse[start : start + len(a)])
        start += len(a)
    return out, classes


def _select(metrics: list[dict], sel: Iterable[str], families: Sequence[str]) -> list[dict]:
    """The metrics named in ``sel``: exact names (``recall_at_4``) or families
    (``recall_at_k`` keeps every ``recall_at_<number>``), as ``simlearn eval --metrics``."""
    sel = [s.strip() for s in sel if s.strip()]
    names = {m["name"] for m in metrics}

    def member(name: str, family: str) -> bool:
        return (
            family.endswith("k")
            and name.startswith(family[:-1])
            and _DIGITS.fullmatch(name[len(family) - 1 :]) is not None
        )

    for s in sel:
        if s not in families and s not in names and not any(member(s, f) for f in families):
            raise ValueError(f'metrics: unknown metric "{s}"; expected one of {", ".join(families)}')
    return [
        m
        for m in metrics
        if any(m["name"] == s or (s in families and member(m["name"], s)) for s in sel)
    ]


def _metric_list(metrics: str | Iterable[str] | None) -> list[str] | None:
    if metrics is None:
        return None
    if isinstance(metrics, str):
        return metrics.split(",")
    return list(metrics)


def _ks(k: int | Iterable[int] | None) -> list[int] | None:
    if k is None:
        return None
    if isinstance(k, (int, np.integer)):
        ks = [int(k)]
    else:
        ks = [int(v) for v in k]
    if any(v < 0 for v in ks):
        raise ValueError(f"k: negative cut-off in {ks}")
    return ks


class EvalResult(dict):
    """Metric name → value, in the order ``simlearn eval`` reports them.

    A plain ``dict`` of floats, plus:

    * ``ci``: metric name → ``(low, high)`` bootstrap 95% interval (``ci=True`` only);
    * ``warnings``: what the engine adjusted (clamped K, …), also issued as ``UserWarning``;
    * ``per_class``: with ``per_class=True``, one dict per class (``label``, ``n_queries``,
      ``metrics``), classes in ascending label order;
    * ``report``: the complete report, identical to the JSON of ``simlearn eval --json``
      (counts, lone queries, depth, averaging, …).
    """

    ci: dict[str, tuple[float, float]]
    warnings: list[str]
    per_class: list[dict] | None
    report: dict

    def __init__(self, report: dict, classes: np.ndarray | None = None):
        super().__init__((m["name"], float(m["value"])) for m in report["metrics"])
        self.report = report
        self.ci = {m["name"]: tuple(m["ci"]) for m in report["metrics"] if m.get("ci") is not None}
        self.warnings = list(report.get("warnings", []))
        rows = report.get("per_class")
        self.per_class = None
        if rows is not None:
            self.per_class = [
                {
                    "label": classes[r["label"]].item() if classes is not None else r["label"],
                    "n_queries": r["n_queries"],
                    "metrics": {m["name"]: float(m["value"]) for m in r["metrics"]},
                }
                for r in rows
            ]

    def __repr__(self) -> str:
        return f"EvalResult({dict.__repr__(self)})"


def evaluate(
    embeddings: Any,
    labels: Any,
    *,
    query: Any = None,
    query_labels: Any = None,
    k: int | Iterable[int] | None = None,
    metrics: str | Iterable[str] | None = None,
    similarity: str | None = None,
    ci: bool = False,
    seed: int = 0,
    per_class: bool = False,
    continuous_labels: bool = False,
    label_distance: str = "euclidean",
    block_size: int = 2048,
) -> EvalResult:
    """Exact retrieval evaluation: the Python face of ``simlearn eval``, same names and values.

    Without ``query``, every row of ``embeddings`` is a query searched among the other rows
    (leave-one-out, PML's ``ref_includes_query``); with it, the ``query`` rows are searched in
    the ``embeddings`` gallery (In-Shop style).

    Args:
        embeddings: ``n × d`` gallery (and queries, without ``query``): numpy float32/float64
            in C or Fortran order (read in place, one float32 copy for the engine), any other
            numeric array, or a torch tensor.
        labels: ``n`` class labels (integers or strings) or, with ``continuous_labels``, an
            ``n × m`` (or ``n``) float label array.
        query, query_labels: separate queries and their labels (both or neither).
        k: cut-offs K (default ``(1, 2, 4, 8)``; continuous labels: nDCG@10..100 and
            distance@1..10); values above the gallery size are clamped with a warning.
        metrics: names to keep (list or comma-separated): ``precision_at_1``, ``recall_at_k``,
            ``r_precision``, ``map_at_r``, ``map_at_k``, ``mrr``, ``nmi``, ``ami`` (continuous:
            ``ndcg_at_k``, ``mean_label_distance_at_k``) or an exact name such as
            ``recall_at_4``. Default: all except ``nmi`` and ``ami``.
        similarity: ``"cosine"`` (default), ``"dot"`` or ``"sqeuclidean"`` (default for
            continuous labels).
        ci: bootstrap 95% intervals over queries (1000 resamples seeded by ``seed``), in
            ``result.ci``.
        seed: seed of the bootstrap and of k-means (NMI/AMI).
        per_class: macro averaging over classes (PML ``avg_of_avgs``) plus ``result.per_class``.
        continuous_labels: ``labels`` are float label vectors (nDCG@K, mean label distance@K).
        label_distance: distance between continuous labels: ``euclidean``, ``manhattan`` or
            ``circular:PERIOD``.
        block_size: query rows per kNN tile (memory per thread: block × 4096 f32 scores).

    Returns:
        :class:`EvalResult`, a ``dict`` of metric name → value.

    Raises:
        ValueError: the CLI's one-line message: NaN/Inf row, count mismatch, dimension
            mismatch, a single class, all queries lone, unknown metric, ``k = 0``, …
    """
    if (query is None) != (query_labels is None):
        raise ValueError("query and query_labels go together: give both or neither")
    sel = _metric_list(metrics)
    ks = _ks(k)
    names = ("embeddings", "labels", "query", "query_labels")
    gallery = _float_matrix(embeddings, "embeddings")
    q = None if query is None else _float_matrix(query, "query")

    if continuous_labels:
        if per_class:
            raise ValueError("per_class needs class labels, not continuous_labels")
        gl = _continuous_labels(labels, "labels")
        ql = None if query_labels is None else _continuous_labels(query_labels, "query_labels")
        text = _native.evaluate_continuous_json(
            gallery,
            gl,
            q,
            ql,
            ks=ks,
            similarity=similarity,
            label_distance=label_distance,
            ci=bool(ci),
            seed=int(seed),
            block_size=int(block_size),
            names=names,
        )
        report = json.loads(text)
        if sel is not None:
            report["metrics"] = _select(report["metrics"], sel, _CONTINUOUS_FAMILIES)
        _warn(report)
        return EvalResult(report)

    if label_distance != "euclidean":
        raise ValueError("label_distance applies only with continuous_labels=True")
    if query is None:
        (gl,), classes = _encode_labels([_label_vector(labels, "labels")], ["labels"], False)
        ql = None
    else:
        (gl, ql), classes = _encode_labels(
            [_label_vector(labels, "labels"), _label_vector(query_labels, "query_labels")],
            ["labels", "query_labels"],
            False,
        )
    wants_nmi = sel is not None and any(s.strip() in ("nmi", "ami") for s in sel)
    text, _ = _native.evaluate_classes_json(
        gallery,
        gl,
        q,
        ql,
        ks=[1, 2, 4, 8] if ks is None else ks,
        similarity=similarity or "cosine",
        per_class=bool(per_class),
        nmi=wants_nmi,
        ci=bool(ci),
        seed=int(seed),
        block_size=int(block_size),
        map_at_k_divisor="min_k_r",
        per_query=False,
        names=names,
    )
    report = json.loads(text)
    if sel is not None:
        report["metrics"] = _select(report["metrics"], sel, _CLASS_FAMILIES)
        for row in report.get("per_class") or []:
            row["metrics"] = _select(row["metrics"], sel, _CLASS_FAMILIES)
    _warn(report)
    return EvalResult(report, classes)


def _continuous_labels(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x)
    if a.ndim == 1:
        a = a[:, None]
    return _float_matrix(a, name)


def _warn(report: Mapping[str, Any]) -> None:
    for w in report.get("warnings", []):
        warnings.warn(w, UserWarning, stacklevel=3)


def knn(
    query: Any,
    gallery: Any,
    k: int,
    similarity: str = "cosine",
    *,
    block_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every query row.

    Args:
        query: ``n_q × d`` array (float32/float64 read in place) or torch tensor.
        gallery: ``n_g × d`` array, or ``None`` to search the queries among themselves with
            each query excluded by index (exact duplicates of it are still found).
        k: neighbours per query (``1 ≤ k ≤ n_g``; ``≤ n_q − 1`` without a gallery).
        similarity: ``"cosine"``, ``"dot"`` or ``"sqeuclidean"``.

    Returns:
        ``(indices, scores)``: ``n_q × k`` int64 gallery rows and float32 scores, best first.
        Scores are "larger = closer" (the negative squared distance for ``sqeuclidean``).
        Candidates are re-scored in float64 by one fixed-order kernel and ties are broken by
        the lower gallery index, so the result does not depend on threads or block size.
    """
    q = _float_matrix(query, "query")
    g = None if gallery is None else _float_matrix(gallery, "gallery")
    return _native.knn_search(q, g, int(k), similarity, int(block_size), ("query", "gallery"))


def label_distances(labels: Any, distance: str = "euclidean") -> np.ndarray:
    """The ``n × n`` float32 matrix of distances between the rows of ``labels``.

    ``labels`` is ``n`` numbers or an ``n × m`` array of label vectors; ``distance`` is
    ``euclidean``, ``manhattan`` or ``circular:PERIOD`` (wrap-around per coordinate, e.g.
    ``circular:360`` for angles in degrees). This is the ``label_dist`` argument of
    :class:`simlearn.torch.LogRatioLoss`.
    """
    return _native.label_distances(_continuous_labels(labels, "labels"), distance)


# ---------------------------------------------------------------------------------------------
# pytorch-metric-learning's AccuracyCalculator

_PML_METRICS = (
    "AMI",
    "NMI",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
_KNN_METRICS = (
    "precision_at_1",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "r_precision",
    "mean_reciprocal_rank",
)
_CLUSTER_METRICS = ("NMI", "AMI")


def _similarity_of_knn_func(knn_func: Any) -> str:
    """The score under which a PML ``knn_func`` ranks, for the kNN functions PML ships."""
    name = type(knn_func).__name__
    if name == "FaissKNN":
        init = getattr(knn_func, "index_init_fn", None)
        init_name = getattr(init, "__name__", None)
        if init is None or init_name == "IndexFlatL2":
            return "sqeuclidean"
        if init_name == "IndexFlatIP":
            return "dot"
    if name == "CustomKNN":
        dist = getattr(knn_func, "distance", None)
        dname = type(dist).__name__
        normalize = bool(getattr(dist, "normalize_embeddings", True))
        if dname == "CosineSimilarity":
            return "cosine"
        if dname == "DotProductSimilarity":
            return "cosine" if normalize else "dot"
        if dname == "LpDistance" and getattr(dist, "p", 2) == 2:
            return "cosine" if normalize else "sqeuclidean"
    raise ValueError(
        f"knn_func {knn_func!r}: simlearn.AccuracyCalculator runs its own exact kNN and "
        "recognises FaissKNN (IndexFlatL2/IndexFlatIP) and CustomKNN over CosineSimilarity, "
        "DotProductSimilarity or LpDistance(p=2); pass similarity='cosine', 'dot' or "
        "'sqeuclidean' instead"
    )


class AccuracyCalculator:
    """A drop-in for ``pytorch_metric_learning.utils.accuracy_calculator.AccuracyCalculator``
    (PML 2.x): the same constructor, :meth:`get_accuracy` and metric names, computed by
    simlearn's exact, bounded-memory kNN instead of faiss.

    Metrics: ``precision_at_1``, ``r_precision``, ``mean_average_precision_at_r``,
    ``mean_average_precision`` (at ``k``, divided by R as PML), ``mean_reciprocal_rank`` (over
    the first ``k`` neighbours), ``NMI`` and ``AMI`` (k-means++ with ``seed``; PML runs faiss
    k-means, so these two agree with PML only up to clustering noise).

    PML conventions kept: lone queries (no other reference item of their class) are left out
    of the kNN metrics, ``avg_of_avgs`` averages per class, ``return_per_class`` returns one
    value per class in ascending label order, ``k`` is ``None`` (the whole ranking),
    ``"max_bin_count"`` or an integer, a ``reference`` of ``None`` means leave-one-out.

    Differences, all deliberate:

    * The default ranking is PML's default ``FaissKNN`` (``IndexFlatL2``): squared Euclidean
      on the embeddings as given. ``knn_func`` is read for the kNN classes PML ships
      (``FaissKNN``, ``CustomKNN`` over cosine / dot / L2); ``similarity=`` sets the score
      directly.
    * With an integer ``k`` below the largest class, ``r_precision`` and
      ``mean_average_precision_at_r`` are still exact (PML's own values there are the
      truncated ones it warns are incorrect).
    * ``ref_includes_query=True`` needs ``reference`` to be the query set itself (PML also
      accepts a query set that is a prefix of a larger reference).
    * ``label_comparison_fn`` is not supported (labels are compared by equality); labels may
      be integers, floats or strings.
    * A set with a single class raises ``ValueError`` instead of reporting 1.0.
    """

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: int | str | None = None,
        label_comparison_fn: Any = None,
        device: Any = None,
        knn_func: Any = None,
        kmeans_func: Any = None,
        *,
        similarity: str | None = None,
        seed: int = 0,
        block_size: int = 2048,
    ):
        self.original_function_dict = {m: m for m in _PML_METRICS}
        self.check_primary_metrics(include, exclude)
        self.original_function_dict = self._function_dict(include, exclude)
        self.curr_function_dict = self._function_dict()
        if avg_of_avgs and return_per_class:
            raise ValueError("avg_of_avgs and return_per_class are mutually exclusive")
        self.avg_of_avgs = avg_of_avgs
        self.return_per_class = return_per_class
        if (not (isinstance(k, int) and not isinstance(k, bool) and k > 0)) and (
            k not in [None, "max_bin_count"]
        ):
            raise ValueError("k must be an integer greater than 0, or None, or 'max_bin_count'")
        self.k = k
        if label_comparison_fn is not None:
            raise NotImplementedError(
                "simlearn.AccuracyCalculator compares labels by equality; label_comparison_fn "
                "is not supported"
            )
        if kmeans_func is not None:
            warnings.warn(
                "simlearn.AccuracyCalculator clusters with its own seeded k-means++; kmeans_func "
                "is ignored",
                UserWarning,
                stacklevel=2,
            )
        self.device = device
        self.knn_func = knn_func
        if similarity is not None:
            self.similarity = similarity
        elif knn_func is not None:
            self.similarity = _similarity_of_knn_func(knn_func)
        else:
            self.similarity = "sqeuclidean"
        self.seed = seed
        self.block_size = block_size

    # PML's helpers, for code that calls them.
    def _function_dict(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> dict:
        if len(include) == 0:
            include = list(self.original_function_dict.keys())
        included = [k for k in include if k not in exclude]
        return {k: v for k, v in self.original_function_dict.items() if k in included}

    get_function_dict = _function_dict

    def get_curr_metrics(self) -> list[str]:
        """The metrics the next :meth:`get_accuracy` reports."""
        return list(self.curr_function_dict.keys())

    def requires_clustering(self) -> list[str]:
        return list(_CLUSTER_METRICS)

    def requires_knn(self) -> list[str]:
        return list(_KNN_METRICS)

    def check_primary_metrics(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        primary = list(self.original_function_dict.keys())
        for met in (include, exclude):
            if not isinstance(met, (tuple, list)):
                raise TypeError(f"Arguments must be of type tuple, not {type(met)}.")
            if not set(met).issubset(set(primary)):
                raise ValueError(f"Primary metrics must be one or more of: {primary}.")

    def description(self) -> str:
        return "avg_of_avgs" if self.avg_of_avgs else ""

    def get_accuracy(
        self,
        query: Any,
        query_labels: Any,
        reference: Any = None,
        reference_labels: Any = None,
        ref_includes_query: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Metric name → value (a list per class with ``return_per_class``), as PML's
        ``get_accuracy``.

        Args:
            query: ``n_q × d`` embeddings (numpy array or torch tensor, any device).
            query_labels: ``n_q`` labels (or ``n_q × 1``).
            reference: ``n_r × d`` reference embeddings, or ``None`` for leave-one-out on
                ``query`` (then ``ref_includes_query`` is implied).
            reference_labels: ``n_r`` labels.
            ref_includes_query: ``reference`` is the query set (each query is excluded from
                its own neighbours by index).
            include, exclude: restrict the metrics of this call.
        """
        same_object = reference is None or reference is query
        if reference is None:
            reference_labels = query_labels
            ref_includes_query = True
        q = _float_matrix(query, "query")
        q_lab = _label_vector(query_labels, "query_labels")
        if same_object:
            r, r_lab = q, _label_vector(reference_labels, "reference_labels")
        else:
            r = _float_matrix(reference, "reference")
            r_lab = _label_vector(reference_labels, "reference_labels")
        loo = bool(ref_includes_query)
        if loo and not same_object:
            if len(q) != len(r):
                raise ValueError(
                    f"ref_includes_query=True: simlearn needs reference to be the query set "
                    f"itself, got {len(q)} query rows and {len(r)} reference rows; pass "
                    "reference=None for leave-one-out"
                )
            if not (
                q.shape == r.shape
                and np.allclose(q, r)
                and len(q_lab) == len(r_lab)
                and np.array_equal(q_lab, r_lab)
            ):
                raise ValueError(
                    "When ref_includes_query is True, the first len(query) elements of "
                    "reference must be equal to query. Likewise, the first len(query_labels) "
                    "elements of reference_labels must be equal to query_labels."
                )
        self.curr_function_dict = self._function_dict(include, exclude)
        curr = self.get_curr_metrics()

        if loo:
            (ql,), classes = _encode_labels([q_lab], ["query_labels"], True)
            rl = ql
        else:
            (ql, rl), classes = _encode_labels(
                [q_lab, r_lab], ["query_labels", "reference_labels"], True
            )
        if len(ql) != len(q):
            raise ValueError(
                f"count mismatch: query_labels holds {len(ql)} labels but query has {len(q)} rows"
            )
        if len(rl) != len(r):
            raise ValueError(
                f"count mismatch: reference_labels holds {len(rl)} labels but reference has "
                f"{len(r)} rows"
            )

        knn_wanted = [m for m in curr if m in _KNN_METRICS]
        nmi_wanted = any(m in _CLUSTER_METRICS for m in curr)
        out: dict[str, Any] = {}
        if not knn_wanted and not nmi_wanted:
            return out

        # PML's bin counts: reference items of each query label (the query itself included).
        uniq, counts = np.unique(rl, return_counts=True)
        q_classes = np.unique(ql)
        pos = np.searchsorted(uniq, q_classes)
        pos_ok = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == q_classes)
        match = np.where(pos_ok, counts[np.minimum(pos, len(uniq) - 1)], 0)
        self_count = int(loo)
        any_evaluable = bool(np.any(match - self_count > 0))

        values: dict[str, Any] = {}
        if knn_wanted and not any_evaluable:
            warnings.warn("None of the query labels are in the reference set.", UserWarning, stacklevel=2)
            nan = [float("nan")] * len(q_classes) if self.return_per_class else float("nan")
            values.update({m: nan for m in knn_wanted})
            knn_wanted = []

        if knn_wanted or nmi_wanted:
            max_bin = int(match.max()) if len(match) else 0
            if self.k == "max_bin_count":
                depth_k = max_bin - self_count
            elif self.k is None:
                depth_k = len(r) - self_count
            else:
                depth_k = int(self.k)
                exact = {"r_precision", "mean_average_precision_at_r"} & set(knn_wanted)
                if depth_k < max_bin and exact:
                    warnings.warn(
                        f"k = {depth_k} is below the largest class ({max_bin}): PML computes "
                        f"{sorted(exact)} on the first k neighbours only (values it calls "
                        "incorrect); simlearn retrieves max(k, R) neighbours, so its values are "
                        "exact and may differ from PML's",
                        UserWarning,
                        stacklevel=2,
                    )
            depth_k = max(depth_k, 1)
            ranked = any(m in ("mean_average_precision", "mean_reciprocal_rank") for m in knn_wanted)
            per_class = bool(self.avg_of_avgs or self.return_per_class)
            if knn_wanted or nmi_wanted:
                values.update(
                    self._engine(q, ql, r, rl, loo, depth_k, ranked, per_class, knn_wanted, nmi_wanted)
                )
        for m in curr:
            if m in values:
                out[m] = values[m]
        return out

    def _engine(
        self,
        q: np.ndarray,
        ql: np.ndarray,
        r: np.ndarray,
        rl: np.ndarray,
        loo: bool,
        depth_k: int,
        ranked: bool,
        per_class: bool,
        knn_wanted: list[str],
        nmi_wanted: bool,
    ) -> dict[str, Any]:
        names = ("query", "query_labels", "reference", "reference_labels")
        common = dict(
            similarity=self.similarity,
            per_class=per_class,
            ci=False,
            seed=int(self.seed),
            block_size=int(self.block_size),
            map_at_k_divisor="r",
        )
        out: dict[str, Any] = {}
        if not knn_wanted:
            # NMI/AMI only: no kNN beyond the shallowest depth the engine accepts.
            common["per_class"] = False
        args = (q, ql, None, None) if loo else (r, rl, q, ql)
        text, pq = _native.evaluate_classes_json(
            *args,
            ks=[depth_k] if ranked else [1],
            nmi=nmi_wanted,
            per_query=ranked,
            names=(names[0], names[1], names[0], names[1]) if loo else (names[2], names[3], names[0], names[1]),
            **common,
        )
        report = json.loads(text)
        for w in report.get("warnings", []):
            warnings.warn(w, UserWarning, stacklevel=3)
        got = {m["name"]: m["value"] for m in report["metrics"]}
        k_used = report["ks"][0]
        engine_name = {
            "precision_at_1": "precision_at_1",
            "r_precision": "r_precision",
            "mean_average_precision_at_r": "map_at_r",
            "mean_average_precision": f"map_at_{k_used}",
            "mean_reciprocal_rank": "mrr",
        }
        rows = report.get("per_class") or []
        for m in knn_wanted:
            if m == "mean_reciprocal_rank" and ranked and report["neighbours"] > k_used:
                out[m] = self._mrr_at_k(pq, ql, k_used)
                continue
            name = engine_name[m]
            if self.return_per_class:
                out[m] = [next(v["value"] for v in row["metrics"] if v["name"] == name) for row in rows]
            else:
                out[m] = got[name]
        if nmi_wanted:
            out["NMI"] = got["nmi"]
            out["AMI"] = got["ami"]
        return out

    def _mrr_at_k(self, pq: Any, ql: np.ndarray, k: int) -> Any:
        """PML's MRR looks at the first ``k`` neighbours; the engine retrieved ``max(k, R)``.
        The reciprocal rank within the first k is the engine's reciprocal rank where its
        Recall@k is 1, else 0."""
        names, values, rows = pq
        rr = values[names.index("mrr")] * values[names.index(f"recall_at_{k}")]
        if not (self.avg_of_avgs or self.return_per_class):
            return float(rr.mean())
        _, inv = np.unique(ql[rows.astype(np.int64)], return_inverse=True)
        per_class = np.bincount(inv, weights=rr) / np.bincount(inv)
        if self.return_per_class:
            return per_class.tolist()
        return float(per_class.mean())
