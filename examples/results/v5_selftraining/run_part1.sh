#!/usr/bin/env bash
# Part 1 of PROTOCOL.md: clear -> night (then clear -> rain), validation, seed 42. Resumable: rerun after a stop.
# Usage: bash examples/results/v5_selftraining/run_part1.sh [OUT] [TARGET]   (default outputs/v5, synthetic/night)
set -euo pipefail
OUT=${1:-outputs/v5}
TARGET=${2:-synthetic/night}
PAIR=clear2${TARGET#synthetic/}
RUN="python examples/research/train_variants.py --source synthetic/clear --target $TARGET --resume_from_checkpoint latest --checkpointing_steps 100"
$RUN --stage source --output_dir $OUT/$PAIR/base
$RUN --stage acte --output_dir $OUT/$PAIR/base
TRANSFER="$RUN --stage transfer --source_model $OUT/$PAIR/base/source --acte_model $OUT/$PAIR/base/acte"
$TRANSFER --method finetune selftrain --output_dir $OUT/$PAIR/labels20
$TRANSFER --method selftrain --mask_ratio 0 --output_dir $OUT/$PAIR/labels20-nomask
$TRANSFER --method tmt --focus_map oracle --output_dir $OUT/$PAIR/labels20
for part in trust mask tma; do
  $TRANSFER --method tmt --focus_map oracle --tmt_parts $part --output_dir $OUT/$PAIR/labels20-$part
done
$TRANSFER --method tmt --focus_map shuffled --output_dir $OUT/$PAIR/labels20
$TRANSFER --method tmt --output_dir $OUT/$PAIR/labels20
$TRANSFER --method selftrain tmt --target_train_samples 0 --output_dir $OUT/$PAIR/labels0
$TRANSFER --method tmt --focus_map oracle --target_train_samples 0 --output_dir $OUT/$PAIR/labels0
