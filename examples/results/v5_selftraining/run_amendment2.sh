#!/usr/bin/env bash
# Amendment 2 of PROTOCOL.md: class-balanced pseudo-labels. Usage: bash .../run_amendment2.sh [OUT]  (after run_part1.sh)
set -euo pipefail
OUT=${1:-outputs/v5}
PAIR=clear2night
RUN="python examples/research/train_variants.py --source synthetic/clear --target synthetic/night --resume_from_checkpoint latest
  --checkpointing_steps 100 --stage transfer --source_model $OUT/$PAIR/base/source --acte_model $OUT/$PAIR/base/acte
  --pseudo_label_class_quantile 0.5"
for labels in 20 0; do
  $RUN --method selftrain tmt --target_train_samples $labels --output_dir $OUT/$PAIR/cbst-labels$labels
  $RUN --method tmt --focus_map oracle --target_train_samples $labels --output_dir $OUT/$PAIR/cbst-labels$labels
done
