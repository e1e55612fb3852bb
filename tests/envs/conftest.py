"""Session fixtures: data trees in the real benchmarks' formats and scale (builders in real_data_trees.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_data_trees import (
    ALFWORLD_COUNTS,
    SEARCH_R1_TEST,
    SEARCH_R1_TRAIN,
    write_alfworld_split,
    write_search_r1_parquet,
    write_webshop_data,
)


@pytest.fixture(scope="session")
def alfworld_tree(tmp_path_factory) -> Path:
    """A mock ALFWorld data root with the real per-type game counts of train, valid_seen and valid_unseen."""
    root = tmp_path_factory.mktemp("alfworld_real")
    for split, counts in ALFWORLD_COUNTS.items():
        write_alfworld_split(root, split, counts)
    return root


@pytest.fixture(scope="session")
def search_r1_dir(tmp_path_factory) -> Path:
    """train.parquet (NQ then HotpotQA, 169,615 rows) and test.parquet (7 sources, 51,713 rows)."""
    root = tmp_path_factory.mktemp("search_r1")
    write_search_r1_parquet(root / "train.parquet", SEARCH_R1_TRAIN, "train")
    write_search_r1_parquet(root / "test.parquet", SEARCH_R1_TEST, "test")
    return root


@pytest.fixture(scope="session")
def webshop_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("webshop_real")
    write_webshop_data(root / "data")
    return root
