"""Shared by the benchmark tests: the scripts under benchmarks/ are modules of no package, imported by name."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")


@pytest.fixture(scope="session")
def load_benchmark():
    """`load_benchmark("doors_study")`: the module benchmarks/doors_study.py (benchmarks/ put on sys.path once)."""

    def load(name: str):
        if BENCHMARKS not in sys.path:
            sys.path.insert(0, BENCHMARKS)
        return importlib.import_module(name)

    return load
