#!/usr/bin/env bash
# Amendment 5: CamVid label budget (0 labelled dusk frames; 5 waits, see 5a). Run like run_camvid.sh, after it.
set -euo pipefail
OUT=$1
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
COMMON="--source camvid-day --target camvid-dusk --target_train_split train[:40] --target_eval_split train[42:]
  --image_size 240 320 --crop_size 240 320 --num_target_unlabeled 40 --checkpointing_steps 100
  --resume_from_checkpoint latest --stage transfer --source_model $OUT/seed42/source --acte_model $OUT/seed42/acte"
python "$REPO/examples/research/train_variants.py" $COMMON --target_train_samples 0 --output_dir "$OUT/labels0" --method selftrain tmt
