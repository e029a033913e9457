"""simlearn: exact retrieval evaluation and metric-learning losses, in Rust.

* :func:`evaluate` — every metric of ``simlearn eval`` (P@1, Recall@K, R-precision, MAP@R,
  MAP@K, MRR, NMI/AMI; nDCG@K and mean label distance@K for continuous labels), with the same
  names and values, on numpy arrays.
* :class:`AccuracyCalculator` — a drop-in for pytorch-metric-learning's
  ``AccuracyCalculator`` (same constructor, ``get_accuracy`` and metric names; exact kNN, no
  faiss).
* :func:`knn` — exact k-nearest neighbours with deterministic ties.
* :func:`label_distances` — the label-distance matrix the continuous losses take.
* :mod:`simlearn.torch` — ``ContextualLoss`` and ``LogRatioLoss`` as ``torch.nn.Module``\\ s
  (imported on demand: ``import simlearn`` never imports torch).

The computation runs in the Rust crates ``simlearn-eval`` and ``simlearn`` with the GIL
released; bad input raises :class:`ValueError` with the CLI's one-line message.
"""

from ._eval import AccuracyCalculator, EvalResult, evaluate, knn, label_distances
from ._native import __version__

__all__ = [
    "AccuracyCalculator",
    "EvalResult",
    "evaluate",
    "knn",
    "label_distances",
    "__version__",
]
