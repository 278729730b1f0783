#!/usr/bin/env bash
# Amendment 7 of PROTOCOL.md, resumable. (f) runs once amendment 6 (d) has finished: rerun the script after it.
# Usage: as run_amendment6.sh (OUT CAMVID).
set -euo pipefail
OUT=$1
CAMVID=$2
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
CAMVID_RUN="python $REPO/examples/research/train_variants.py --resume_from_checkpoint latest --checkpointing_steps 100
  --source camvid-day --target camvid-dusk --target_train_split train[:40] --target_eval_split train[42:]
  --image_size 240 320 --crop_size 240 320 --num_target_unlabeled 40 --stage transfer --method tmt"
cd "$CAMVID"
# (e) shuffled maps, 5 labels, transfer seeds 42, 1, 2
for seed in 42 1 2; do
  $CAMVID_RUN --seed $seed --target_train_samples 5 --focus_map shuffled --source_model "$OUT/camvid/seed42/source" \
    --acte_model "$OUT/camvid/seed42/acte" --output_dir "$OUT/camvid/labels5-shuffled-seed$seed"
done
# (g) TMA only, 5 labels, transfer seed 42
$CAMVID_RUN --seed 42 --target_train_samples 5 --tmt_parts tma --source_model "$OUT/camvid/seed42/source" \
  --acte_model "$OUT/camvid/seed42/acte" --output_dir "$OUT/camvid/labels5-tma-seed42"
# (f) shuffled maps, full-pipeline seeds 1 and 2, 20 labels
for seed in 1 2; do
  [ -d "$OUT/camvid/pipeline-seed$seed/acte" ] || { echo "(f) seed $seed waits for amendment 6 (d)"; continue; }
  $CAMVID_RUN --seed $seed --focus_map shuffled --source_model "$OUT/camvid/pipeline-seed$seed/source" \
    --acte_model "$OUT/camvid/pipeline-seed$seed/acte" --output_dir "$OUT/camvid/pipeline-shuffled-seed$seed"
done
