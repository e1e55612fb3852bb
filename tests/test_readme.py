"""Every ```python block of README.md runs as written on this CPU machine (the README gives CPU sizes and the
built-in tiny model), and trains what it says: the trainer it builds takes its steps and logs the SDAR metrics."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) == 2  # drop-in use, multi-turn agents: a new block gets a run here automatically


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i}")
def test_readme_block_runs_as_written(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    if "make_env(\"alfworld\")" in code and importlib.util.find_spec("alfworld") is None:
        pytest.skip("the alfworld package is not installed")
    monkeypatch.chdir(tmp_path)  # the blocks write to ./out
    monkeypatch.setenv("TRL_SDAR_CACHE", str(tmp_path / "cache"))  # builtin:tiny is built there
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    namespace: dict = {"__name__": f"readme_block{index}"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == trainer.args.max_steps == 1
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 1 and "sdar/gate_mean" in logged[0] and "sdar/teacher_gap_mean" in logged[0]
    if "rollout_func" in code:
        assert "env/alfworld/success" in logged[0]  # the episodes were played on the built-in ALFWorld
