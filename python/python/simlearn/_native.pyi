"""Type stubs of the compiled extension ``simlearn._native`` (python/src/lib.rs).

The public API is in ``simlearn`` and ``simlearn.torch``; these functions take already
converted arrays (2-D float32/float64, int64 labels) and raise ``ValueError`` with the CLI's
one-line messages.
"""

from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt

__version__: str

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Names4 = tuple[str, str, str, str]

def evaluate_classes_json(
    embeddings: _Floats,
    labels: npt.NDArray[np.int64],
    query: Optional[_Floats],
    query_labels: Optional[npt.NDArray[np.int64]],
    *,
    ks: Sequence[int],
    similarity: str,
    per_class: bool,
    nmi: bool,
    ci: bool,
    seed: int,
    block_size: int,
    map_at_k_divisor: str,
    per_query: bool,
    names: _Names4,
) -> tuple[
    str,
    Optional[tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.uint64]]],
]:
    """The JSON of ``simlearn eval --json`` and, with ``per_query``, the metric names, the
    ``n_metrics × n_evaluated`` per-query values and the evaluated query rows."""

def evaluate_continuous_json(
    embeddings: _Floats,
    labels: _Floats,
    query: Optional[_Floats],
    query_labels: Optional[_Floats],
    *,
    ks: Optional[Sequence[int]],
    similarity: Optional[str],
    label_distance: str,
    ci: bool,
    seed: int,
    block_size: int,
    names: _Names4,
) -> str:
    """The JSON of ``simlearn eval --continuous-labels --json``."""

def knn_search(
    query: _Floats,
    gallery: Optional[_Floats],
    k: int,
    similarity: str,
    block_size: int,
    names: tuple[str, str],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """``(indices, scores)``, ``n_q × k``, best first, ties by the lower gallery index."""

def label_distances(labels: _Floats, distance: str) -> npt.NDArray[np.float32]:
    """The ``n × n`` distances between label rows."""

class Contextual:
    """The contextual hybrid loss, validated once."""

    def __init__(
        self,
        *,
        k: int,
        eps: float,
        gain: float,
        lam: float,
        gamma: float,
        pos_margin: float,
        neg_margin: float,
        sim_target: float,
        convention: str,
        kernel: str,
    ) -> None: ...
    def forward_backward(
        self, embeddings: _Floats, labels: npt.NDArray[np.int64]
    ) -> tuple[float, list[tuple[str, float]], _Floats]:
        """``(total, [(term, value)], ∂total/∂embeddings)``."""

class LogRatio:
    """The log-ratio loss, validated once."""

    def __init__(
        self,
        *,
        distance: str,
        eps_in_per_dim: float,
        log_eps: float,
        anchors: str,
        ties: Optional[str],
        zero_label: str,
        zero_floor: Optional[float],
    ) -> None: ...
    def forward_backward(
        self, embeddings: _Floats, label_dist: npt.NDArray[np.float32]
    ) -> tuple[float, list[tuple[str, float]], _Floats]:
        """``(total, [], ∂total/∂embeddings)``."""
