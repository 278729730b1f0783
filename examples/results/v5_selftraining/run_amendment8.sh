#!/usr/bin/env bash
# Amendment 8 of PROTOCOL.md (after run_amendment7.sh), resumable. Usage: bash run_amendment8.sh OUT
set -euo pipefail
OUT=$1
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
for pair in clear:rain fog:autumn autumn:fog; do
  source=${pair%:*} target=${pair#*:}
  base="$OUT/v5/${source}2${target}/base"
  python "$REPO/examples/research/train_variants.py" --resume_from_checkpoint latest --checkpointing_steps 100 --stage transfer \
    --source synthetic/$source --target synthetic/$target --source_model "$base/source" --acte_model "$base/acte" \
    --output_dir "$OUT/v5/${source}2${target}/labels20-paper" --method tmt_paper
done
