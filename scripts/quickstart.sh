#!/usr/bin/env bash
# The README's main command: from a fresh clone, offline, on a CPU — set up .venv, then, with SmolLM2-135M-Instruct +
# LoRA, in one of the built-in worlds:
#   1. evaluate the base model (it does not yet write the agent's <think>/<action> format),
#   2. warm start: SFT on demonstrations rendered in the agent's own step prompts (`trl-sdar sft`),
#   3. evaluate the warm-started model, 4. train SDAR from it for a few steps, 5. evaluate that, 6. plot the run,
# and print the valid-format rate, success before and after, and the training reward per step.
# World (first argument): `doors` (default: the warm start wins about 1 episode in 9, so GRPO groups have reward
# spread from the first step and the teacher sees each task's answers) or `alfworld` (easy rooms: the warm start
# rarely wins there, so the reward stays 0 in a few steps). Further arguments go to `trl-sdar train` (e.g.
# --max_steps 4); QUICKSTART_SFT_ARGS to `trl-sdar sft` (e.g. QUICKSTART_SFT_ARGS="--num_demos 32 --max_steps 16").
# Measured from a fresh clone on 2 idle cores: see README (doors and alfworld).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
TRL_SDAR_EXTRAS="${TRL_SDAR_EXTRAS:-envs,plot}" bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TRL_EXPERIMENTAL_SILENCE=1
WORLD=doors
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then WORLD=$1; shift; fi
OUT=outputs/quickstart
SFT=$OUT/sft
RUN=$OUT/sdar
BIN=.venv/bin
case "$WORLD" in
  doors)  # the SDAR testbed world; training and the warm start use ids >= 128, evaluation the pinned 0-31
    SFT_RECIPE=recipes/study/sft_smollm2_doors_cpu.yaml
    SFT_ARGS=(--num_demos 48 --max_steps 16)
    TRAIN_RECIPE=recipes/study/sdar_smollm2_doors_cpu.yaml
    TRAIN_ARGS=(--max_steps 2 --save_strategy no)
    EVAL=(--manifest doors_builtin_eval128 --num-tasks 32 --seeds 0 --temperature 1.0 --max-turn-tokens 40
          --rollout-unit turn --history-window 1 --batch-size 32) ;;
  alfworld)  # 4 pinned tasks (ids 0-3; demonstrations and training use ids >= 128), 6 turns each
    SFT_RECIPE=recipes/quickstart/sft_smollm2_alfworld_cpu.yaml
    SFT_ARGS=()
    TRAIN_RECIPE=recipes/quickstart/sdar_smollm2_alfworld_cpu.yaml
    TRAIN_ARGS=()
    EVAL=(--env alfworld --env-difficulty easy --task-start 0 --num-tasks 4 --seeds 0 --max-turns 6
          --max-turn-tokens 48 --rollout-unit turn --history-window 2 --batch-size 4) ;;
  *) echo "[quickstart] world '$WORLD' is not valid; expected doors or alfworld" >&2; exit 2 ;;
esac
stamp() { echo "[quickstart] $1 (at $(( $(date +%s) - start )) s)"; }

stamp "1/6 evaluating the base model (builtin:smollm2) on pinned $WORLD tasks"
mkdir -p "$OUT"
"$BIN/trl-sdar" eval --model builtin:smollm2 "${EVAL[@]}" --output "$OUT/eval_base.json"

stamp "2/6 warm start: SFT on demonstrations ($SFT_RECIPE)"
# shellcheck disable=SC2086  # QUICKSTART_SFT_ARGS is a list of words
"$BIN/trl-sdar" sft --config "$SFT_RECIPE" --output_dir "$SFT" "${SFT_ARGS[@]}" ${QUICKSTART_SFT_ARGS:-}

stamp "3/6 evaluating the warm-started model"
"$BIN/trl-sdar" eval --model "$SFT" "${EVAL[@]}" --output "$SFT/eval.json"

stamp "4/6 training SDAR from the warm start ($TRAIN_RECIPE)"
"$BIN/trl-sdar" train --config "$TRAIN_RECIPE" --model_name_or_path "$SFT" --output_dir "$RUN" "${TRAIN_ARGS[@]}" "$@"

stamp "5/6 evaluating the SDAR checkpoint"
"$BIN/trl-sdar" eval --model "$RUN" "${EVAL[@]}" --output "$RUN/eval.json"

stamp "6/6 plotting the run"
"$BIN/trl-sdar" plot "$RUN"

echo
echo "[quickstart] done in $(( $(date +%s) - start )) s"
"$BIN/python" - "$OUT/eval_base.json" "$SFT/eval.json" "$RUN/eval.json" <<'PY'
import json, sys

print(f"  {'model':<34} {'valid format':>12} {'success':>8}")
for name, path in zip(("base SmolLM2-135M-Instruct", "warm start (sft)", "warm start + SDAR"), sys.argv[1:]):
    report = json.load(open(path))
    print(f"  {name:<34} {report['valid_format_rate']:>12.2f} {report['success_rate']:>8.2f}")
history = [e for e in json.load(open(sys.argv[3].replace("eval.json", "log_history.json"))) if "loss" in e]
for e in history:
    print(f"  SDAR step {e['step']}: reward {e.get('reward', 0.0):.2f} (std {e.get('reward_std', 0.0):.2f}), groups "
          f"without reward spread {e.get('frac_reward_zero_std', 1.0):.2f}, teacher gap "
          f"{e.get('sdar/teacher_gap_mean', float('nan')):.3f}")
PY
echo "  warm-start model (merged):  $SFT (demonstrations: $SFT/demos.jsonl)"
echo "  SDAR checkpoint (LoRA):     $RUN"
echo "  training metrics:           $RUN/log_history.json"
echo "  evaluation reports:         $OUT/eval_base.json $SFT/eval.json $RUN/eval.json"
echo "  figures:                    $RUN/plots/*.png"
