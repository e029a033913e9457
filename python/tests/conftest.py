"""Shared fixtures: the PML golden sets committed under crates/simlearn-eval/tests/golden."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "crates" / "simlearn-eval" / "tests" / "golden"


@dataclass
class GoldenSet:
    name: str
    expected: dict
    embeddings: np.ndarray
    labels: np.ndarray
    query: np.ndarray | None
    query_labels: np.ndarray | None

    @property
    def loo(self) -> bool:
        return self.query is None

    @property
    def full_depth(self) -> int:
        return len(self.embeddings) - int(self.loo)


def _load(d: Path) -> GoldenSet:
    q = d / "query_embeddings.npy"
    return GoldenSet(
        name=d.name,
        expected=json.loads((d / "expected.json").read_text()),
        embeddings=np.load(d / "embeddings.npy"),
        labels=np.load(d / "labels.npy"),
        query=np.load(q) if q.exists() else None,
        query_labels=np.load(d / "query_labels.npy") if q.exists() else None,
    )


def golden_sets() -> list[GoldenSet]:
    dirs = sorted(p for p in GOLDEN.iterdir() if (p / "expected.json").is_file()) if GOLDEN.is_dir() else []
    # A missing fixture folder is a failure, never a silent pass.
    assert dirs, f"no golden fixture set (a folder with expected.json) under {GOLDEN}"
    return [_load(d) for d in dirs]


@pytest.fixture(scope="session")
def sets() -> list[GoldenSet]:
    s = golden_sets()
    assert {x.name for x in s} >= {"clustered", "query_gallery", "ties_lone"}
    return s
