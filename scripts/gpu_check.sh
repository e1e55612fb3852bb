#!/usr/bin/env bash
# The GPU check in one call (docs/gpu_check.md), for a machine with one CUDA GPU and no network:
#   pytest -m gpu, then a few bf16 LoRA SDAR steps in the episode and turn units (HF generation; vLLM where it is
#   installed), then `trl-sdar eval`, all on the tiny model built in code and the built-in Search-QA. One report:
#   OUT/report.json + OUT/report.md (+ OUT/logs/). Exit status 1 when any stage failed; every stage runs regardless.
#
#   bash scripts/gpu_check.sh --wheels gpu_check_wheels            # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_check        # anywhere: the same stages on the CPU in fp32
#
# Options: --out DIR (default gpu_check_report), --wheels DIR (made by scripts/gpu_check_wheels.sh where there is
# network: trl, datasets and what they need beyond torch/transformers/accelerate/peft/pytest/pyarrow), --python PY
# (default: $PYTHON, else .venv/bin/python, else python3), --dry-run (= --device cpu; or GPU_CHECK_DEVICE=cpu),
# --device cuda|cpu, --work DIR (scratch: models, runs, installed wheels; default gpu_check_work/),
# --budget-s S (default 450 on cuda), --steps N, --eval-tasks N.
# It reads the GPU through torch only and changes no GPU setting; it installs nothing outside its work folder.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
ARGS=()
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PY="$2"; shift 2 ;;
        --python=*) PY="${1#*=}"; shift ;;
        --dry-run) DEVICE=cpu; shift ;;
        --device) DEVICE="$2"; shift 2 ;;
        --device=*) DEVICE="${1#*=}"; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c 'import sys, torch; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    echo "[gpu_check] $PY cannot import torch (or is older than Python 3.10): give the Python that has torch," \
         "transformers, accelerate and peft with --python PATH" >&2
    exit 2
fi
exec "$PY" scripts/gpu_check_run.py --device "$DEVICE" ${ARGS[@]+"${ARGS[@]}"}
