#!/usr/bin/env bash
# The README's main command: from a fresh clone, offline, on a CPU — set up .venv, train SDAR (SmolLM2-135M-Instruct
# + LoRA, skills for the teacher) on the built-in ALFWorld for a few steps, evaluate the checkpoint, plot the run.
# Extra arguments go to `trl-sdar train` (e.g. --max_steps 4). About 10 minutes on 2 cores from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
TRL_SDAR_EXTRAS="${TRL_SDAR_EXTRAS:-envs,plot}" bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TRL_EXPERIMENTAL_SILENCE=1
RUN=outputs/quickstart/sdar
BIN=.venv/bin

echo "[quickstart] 1/3 training SDAR on the built-in ALFWorld (recipes/quickstart/sdar_smollm2_alfworld_cpu.yaml)"
"$BIN/trl-sdar" train --config recipes/quickstart/sdar_smollm2_alfworld_cpu.yaml --output_dir "$RUN" "$@"

echo "[quickstart] 2/3 evaluating the checkpoint on 4 pinned tasks (ids 0-3; training used ids >= 128)"
"$BIN/trl-sdar" eval --model "$RUN" --env alfworld --env-difficulty easy --num-tasks 4 --seeds 0 \
    --max-turns 3 --max-turn-tokens 32 --max-episode-tokens 384 --batch-size 4 --output "$RUN/eval.json"

echo "[quickstart] 3/3 plotting the run"
"$BIN/trl-sdar" plot "$RUN"

echo
echo "[quickstart] done in $(( $(date +%s) - start )) s"
echo "  checkpoint (LoRA adapter): $RUN"
echo "  training metrics:          $RUN/log_history.json"
echo "  evaluation report:         $RUN/eval.json"
echo "  figures:                   $RUN/plots/*.png"
