#!/usr/bin/env bash
# CamVid day -> dusk (PROTOCOL.md, amendment 3). Run from the folder that holds camvid-day/ and camvid-dusk/:
#   cd ../shared/data/camvid && bash /path/to/repo/examples/results/v5_selftraining/run_camvid.sh /path/to/repo/outputs/camvid
set -euo pipefail
OUT=$1
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
COMMON="--source camvid-day --target camvid-dusk --target_train_split train[:40] --target_eval_split train[42:]
  --image_size 240 320 --crop_size 240 320 --num_target_unlabeled 40 --checkpointing_steps 100
  --resume_from_checkpoint latest"
python "$REPO/examples/research/train_variants.py" $COMMON --output_dir "$OUT/seed42" --method finetune align_patch tmt_paper selftrain tmt
for seed in 1 2; do
  python "$REPO/examples/research/train_variants.py" $COMMON --stage transfer --seed $seed --source_model "$OUT/seed42/source" \
    --acte_model "$OUT/seed42/acte" --output_dir "$OUT/transfer-seed$seed" --method finetune align_patch tmt_paper selftrain tmt
done
