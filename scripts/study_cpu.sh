#!/usr/bin/env bash
# The two CPU studies of docs/results.md, from the repository root, offline, on the built-in ALFWorld (easy rooms):
#   1. scratch: warm start of the small study model (builtin:scratch, trained from random initialisation in two
#      SFT stages), then
#      GRPO, naive GRPO+OPSD and SDAR x 3 seeds from it (recipes/compare/scratch_alfworld_cpu.yaml);
#   2. smollm2: warm start of SmolLM2-135M-Instruct + LoRA, then GRPO and SDAR, one seed each
#      (recipes/compare/smollm2_alfworld_cpu.yaml);
#   3. pick: the same on one task type, pick_and_place_simple: a warm start on 64 demonstrations of that type, then
#      GRPO and SDAR trained and evaluated on it (recipes/compare/smollm2_pick_alfworld_cpu.yaml);
#   4. search: as 3, from a warm start on searching demonstrations (--demo_search true) in tiny rooms
#      (recipes/compare/smollm2_search_pick_alfworld_cpu.yaml).
# Usage: bash scripts/study_cpu.sh [scratch|smollm2|pick|search|all]   (default all; they run one after the other)
# Every step is resumable: a finished warm start is kept, and `trl-sdar compare` skips finished runs and
# evaluations. Results: outputs/study/compare_{scratch,smollm2}/{summary.json,results.md,plots/}.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TRL_EXPERIMENTAL_SILENCE=1
BIN=${BIN:-.venv/bin}
which=${1:-all}
case $which in
    scratch|smollm2|pick|search|all) ;;
    *) echo "usage: bash scripts/study_cpu.sh [scratch|smollm2|pick|search|all] (got '$which')" >&2; exit 2 ;;
esac

warm_start() {  # <output folder> <sft arguments…>: skipped when the folder already holds a finished warm start
    local out=$1; shift
    if [[ -f "$out/sft_summary.json" ]]; then
        echo "[study] warm start $out exists: kept"
    else
        "$BIN/trl-sdar" sft "$@" --output_dir "$out"
    fi
}

if [[ $which == scratch || $which == all ]]; then
    # two stages, as the study ran: 160 steps from random initialisation, then 240 more at a lower peak rate
    warm_start outputs/study/scratch_sft --config recipes/study/sft_scratch_alfworld_cpu.yaml
    warm_start outputs/study/scratch_sft2 --config recipes/study/sft_scratch_alfworld_cpu.yaml \
        --model_name_or_path outputs/study/scratch_sft --max_steps 240 --learning_rate 1.5e-3 --warmup_steps 0
    "$BIN/trl-sdar" compare recipes/compare/scratch_alfworld_cpu.yaml
fi
if [[ $which == smollm2 || $which == all ]]; then
    warm_start outputs/study/smollm2_sft --config recipes/quickstart/sft_smollm2_alfworld_cpu.yaml \
        --num_demos 64 --max_steps 32
    "$BIN/trl-sdar" compare recipes/compare/smollm2_alfworld_cpu.yaml
fi
if [[ $which == pick || $which == all ]]; then
    warm_start outputs/study/smollm2_pick_sft --config recipes/quickstart/sft_smollm2_alfworld_cpu.yaml \
        --num_demos 64 --task_types pick_and_place_simple --max_steps 64
    "$BIN/trl-sdar" compare recipes/compare/smollm2_pick_alfworld_cpu.yaml
fi
if [[ $which == search || $which == all ]]; then
    warm_start outputs/study/smollm2_search_sft --config recipes/quickstart/sft_smollm2_alfworld_cpu.yaml \
        --env_difficulty tiny --num_demos 64 --task_types pick_and_place_simple --demo_search true --max_steps 96
    "$BIN/trl-sdar" compare recipes/compare/smollm2_search_pick_alfworld_cpu.yaml
fi
