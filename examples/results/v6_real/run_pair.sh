#!/usr/bin/env bash
# Protocol v6 (PROTOCOL.md beside this file): one pair's frozen 20-label protocol, every transfer seed; resumable
# (rerun after a stop). Run it from a folder that holds camvid-day/, camvid-dusk/ and idd-lite/ laid out as in
# ../shared/data (links are fine), with DEIT pointing at facebook/deit-tiny-patch16-224 or a local copy:
#   DEIT=path/to/deit-tiny-patch16-224 bash run_pair.sh SOURCE TARGET OUT [extra train.py arguments]
# SOURCE, TARGET: camvid-day, camvid-dusk or idd-lite; OUT absolute. Extra arguments go last to every train.py call
# (other budgets, e.g. --target_train_samples 5, or a held-out split); their runs go to their own folders.
set -euo pipefail
SOURCE=$1 TARGET=$2 OUT=$3
shift 3
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
DEIT=${DEIT:-facebook/deit-tiny-patch16-224}
TAG=labels20
[ $# -gt 0 ] && TAG=$(echo "$*" | tr -cs 'A-Za-z0-9' '_' | sed 's/^_//; s/_$//')

# Each domain's data flags as source (training, validation) and as target (labelled/unlabelled pool, validation).
domain() {  # domain NAME ROLE
  case "$1:$2" in
    camvid-day:source) echo "--source camvid-day --train_split train --eval_split validation" ;;
    camvid-day:target) echo "--target camvid-day --target_train_split train --target_eval_split validation --num_target_unlabeled 305" ;;
    camvid-dusk:target) echo "--target camvid-dusk --target_train_split train[:40] --target_eval_split train[42:] --num_target_unlabeled 40" ;;
    idd-lite:source) echo "--source idd-lite --train_split train[:1150] --eval_split train[1150:]" ;;
    idd-lite:target) echo "--target idd-lite --target_train_split train[:1150] --target_eval_split train[1150:] --num_target_unlabeled 400" ;;
    *) echo "unsupported: $1 as $2" >&2; exit 2 ;;
  esac
}
SPACE=idd_level1
[ "$SOURCE:$TARGET" = camvid-day:camvid-dusk ] && SPACE=cityscapes
PAIR="$OUT/${SOURCE}2${TARGET}"
TRAIN="python $REPO/examples/train.py --resume_from_checkpoint latest --checkpointing_steps 100
  $(domain "$SOURCE" source) $(domain "$TARGET" target) --data_dir idd-lite --label_space $SPACE
  --model_name_or_path $DEIT --image_size 192 256 --crop_size 192 256 --num_source_train 1150 --num_eval 253"
BASE="--source_model $PAIR/base/source --acte_model $PAIR/base/acte"

$TRAIN --stage source --seed 42 --output_dir "$PAIR/base" "$@"
$TRAIN --stage acte --seed 42 --output_dir "$PAIR/base" "$@"
for seed in 42 1 2; do
  $TRAIN --stage transfer $BASE --seed $seed --labelled_draw random --method finetune selftrain tmt \
    --output_dir "$PAIR/$TAG-seed$seed" "$@"
  $TRAIN --stage transfer $BASE --seed $seed --labelled_draw random --method tmt --focus_map shuffled \
    --output_dir "$PAIR/$TAG-seed$seed-shuffled" "$@"
done
for seed in 42 1 2; do
  $TRAIN --stage transfer $BASE --seed $seed --labelled_draw random --method tmt_paper \
    --output_dir "$PAIR/$TAG-seed$seed-paper" "$@"
done
