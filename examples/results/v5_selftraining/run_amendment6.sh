#!/usr/bin/env bash
# Amendment 6 of PROTOCOL.md, resumable (rerun after a stop). CAMVID: the folder with camvid-day/ and camvid-dusk/.
# Usage: bash examples/results/v5_selftraining/run_amendment6.sh OUT CAMVID   (OUT absolute, e.g. $PWD/outputs)
set -euo pipefail
OUT=$1
CAMVID=$2
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
TRAIN="python $REPO/examples/research/train_variants.py --resume_from_checkpoint latest --checkpointing_steps 100"
CAMVID_RUN="$TRAIN --source camvid-day --target camvid-dusk --target_train_split train[:40]
  --target_eval_split train[42:] --image_size 240 320 --crop_size 240 320 --num_target_unlabeled 40"
CAMVID_TRANSFER="$CAMVID_RUN --stage transfer --source_model $OUT/camvid/seed42/source
  --acte_model $OUT/camvid/seed42/acte"
# (a) CamVid, 5 labelled dusk frames, transfer seeds 42, 1, 2
for seed in 42 1 2; do
  (cd "$CAMVID" && $CAMVID_TRANSFER --seed $seed --target_train_samples 5 --output_dir "$OUT/camvid/labels5-seed$seed" \
    --method finetune selftrain tmt)
done
# (b) Generated, the other three quick pairs, seed 42, 20 labels
for pair in clear:rain fog:autumn autumn:fog; do
  source=${pair%:*} target=${pair#*:}
  base="$OUT/v5/${source}2${target}/base"
  GENERATED="$TRAIN --source synthetic/$source --target synthetic/$target"
  $GENERATED --stage source --output_dir "$base"
  $GENERATED --stage acte --output_dir "$base"
  $GENERATED --stage transfer --source_model "$base/source" --acte_model "$base/acte" \
    --output_dir "$OUT/v5/${source}2${target}/labels20" --method finetune selftrain tmt
done
# (c) CamVid, 0 labels, transfer seeds 1 and 2
for seed in 1 2; do
  (cd "$CAMVID" && $CAMVID_TRANSFER --seed $seed --target_train_samples 0 --output_dir "$OUT/camvid/labels0-seed$seed" \
    --method selftrain tmt)
done
# (d) CamVid, full-pipeline seeds 1 and 2, 20 labels
for seed in 1 2; do
  (cd "$CAMVID" && $CAMVID_RUN --seed $seed --output_dir "$OUT/camvid/pipeline-seed$seed" --method finetune selftrain tmt)
done
