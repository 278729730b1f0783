#!/usr/bin/env bash
# Amendment 4: tmt with shuffled ACTE maps on CamVid day -> dusk. Run like run_camvid.sh, after it.
set -euo pipefail
OUT=$1
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
for seed in 42 1 2; do
  python "$REPO/examples/research/train_variants.py" --source camvid-day --target camvid-dusk --target_train_split "train[:40]" \
    --target_eval_split "train[42:]" --image_size 240 320 --crop_size 240 320 --num_target_unlabeled 40 \
    --checkpointing_steps 100 --resume_from_checkpoint latest --stage transfer --seed $seed \
    --source_model "$OUT/seed42/source" --acte_model "$OUT/seed42/acte" --output_dir "$OUT/shuffled-seed$seed" \
    --method tmt --focus_map shuffled
done
