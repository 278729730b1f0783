#!/usr/bin/env bash
# Amendment 9 of PROTOCOL.md, resumable. Usage: bash run_amendment9.sh OUT
set -euo pipefail
OUT=$1
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
base="$OUT/v5/clear2night/base"
python "$REPO/examples/research/train_variants.py" --resume_from_checkpoint latest --checkpointing_steps 100 --stage transfer \
  --source synthetic/clear --target synthetic/night --source_model "$base/source" --acte_model "$base/acte" \
  --target_train_samples 5 --output_dir "$OUT/v5/clear2night/labels5" --method finetune selftrain tmt
