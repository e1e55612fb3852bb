"""The package's layers, read from the source: imports run one way (commands → agent loop → method, environments,
skills), nothing imports the CLI, and no module grows past the size budget."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trl_sdar"
# part of the package -> the parts it may import (besides itself)
ALLOWED = {
    "cli": {"commands"},
    "commands": {"agent", "method", "envs", "skills", "models"},
    "testing": {"envs", "models"},
    "models": set(),
    "agent": {"method", "envs", "skills"},
    "skills": {"envs"},
    "method": {"models"},  # SDARTrainer takes the built-in model names (builtin:tiny, …) every command takes
    "envs": set(),
    "manifests": set(),
}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[str]:
    """Every `trl_sdar…` module a file imports, at any depth (lazy imports inside functions count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (use absolute trl_sdar.… imports)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trl_sdar":
            found += [node.module] if node.module != "trl_sdar" else [f"trl_sdar.{a.name}" for a in node.names]
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "trl_sdar"]
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(module_name(p)) for p in SOURCES} - {"__init__"}
    assert parts == set(ALLOWED), "a new top-level module needs its place in ALLOWED (and in DESIGN's layers)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    me = part_of(module_name(path))
    if me == "__init__":  # the package root re-exports the public names lazily
        return
    for target in imports(path):
        other = part_of(target)
        assert other == me or other in ALLOWED[me], (
            f"{module_name(path)} imports {target}: {me} may not import {other}"
        )


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from trl_sdar.cli import main\n    from trl_sdar.agent.rollout import EnvRollout\n")
    assert [part_of(m) for m in imports(bad)] == ["cli", "agent"]
    assert "cli" not in ALLOWED["method"] and "agent" not in ALLOWED["method"]


def test_no_python_file_over_500_lines():
    files = [
        p
        for p in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in {"outputs", "build"} for part in p.relative_to(ROOT).parts)
    ]
    too_long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 500}
    assert not too_long
