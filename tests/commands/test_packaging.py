"""The package as a wheel would ship it: every module folder and data folder is a discovered package."""

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_and_data_folder_is_a_package():
    found = set(find_packages(str(ROOT), include=["trl_sdar*"]))
    folders = {p.parent for p in (ROOT / "trl_sdar").rglob("*.py")} | {ROOT / "trl_sdar" / "manifests"}
    expected = {".".join(f.relative_to(ROOT).parts) for f in folders if "__pycache__" not in f.parts}
    assert expected <= found, f"folders that a wheel would leave out: {sorted(expected - found)}"
