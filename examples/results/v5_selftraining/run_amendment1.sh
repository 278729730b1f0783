#!/usr/bin/env bash
# Amendment 1 of PROTOCOL.md: self-training from the fine-tuned model, against finetune at the doubled budget.
# Usage: bash examples/results/v5_selftraining/run_amendment1.sh [OUT] [TARGET]   (after run_part1.sh)
set -euo pipefail
OUT=${1:-outputs/v5}
TARGET=${2:-synthetic/night}
PAIR=clear2${TARGET#synthetic/}
RUN="python examples/research/train_variants.py --source synthetic/clear --target $TARGET --resume_from_checkpoint latest --checkpointing_steps 100 --stage transfer --acte_model $OUT/$PAIR/base/acte"
$RUN --method finetune --transfer_steps 600 --source_model $OUT/$PAIR/base/source --output_dir $OUT/$PAIR/labels20-600
$RUN --method selftrain tmt --source_model $OUT/$PAIR/labels20/finetune --output_dir $OUT/$PAIR/labels20-from-finetune
