#!/usr/bin/env bash
# Protocol v6 (PROTOCOL.md beside this file): one pair's frozen protocol for one arm, every transfer seed; resumable
# (rerun after a stop). Run it from a folder that holds camvid-day/, camvid-dusk/ and idd-lite/ laid out as in
# ../shared/data (links are fine), with DEIT pointing at facebook/deit-tiny-patch16-224 or a local copy:
#   DEIT=path/to/deit-tiny-patch16-224 [ARM=labels20] bash run_pair.sh SOURCE TARGET OUT [extra train.py arguments]
# DEIT=scratch trains the tiny preset from scratch instead (amendment 5: the reference to the from-scratch results).
# SOURCE, TARGET: camvid-day, camvid-dusk or idd-lite (a dusk target is scored on camvid-dusk/test, amendment 6); OUT
# absolute. ARM (amendment 1):
#   labels20 (default), labels5  finetune, selftrain, tmt, tmt with shuffled maps, tmt_paper on 20 / 5 labelled images;
#   labels0    selftrain, tmt, tmt with shuffled maps on unlabelled target images only (source-only is the baseline);
#   labelsall  finetune, finetune_tma (TMA only), finetune_tma with shuffled maps, tmt_paper and its map-free control
#              align_patch (amendment 3) on every labelled pool image;
#   labelsall1200 (amendment 7) finetune, finetune_tma, finetune_tma with shuffled maps and tmt_paper on every
#              labelled pool image with 1,200 transfer steps (the paper's setting trained longer; on pairs 1–2's
#              rebuilt bases, amendment 11);
#   steps600   the labels20 arm (and its finetune_replay) with 600 transfer steps (amendment 12; the doubling check
#              of amendments 4 and 8 ran finetune, selftrain and tmt, on pair 1 finetune and tmt);
#   replay20, replay5 (amendment 9) finetune_replay on 20 / 5 labelled images, into the labels20 / labels5 arm's folder
#              (<arm>-seed<N>-replay), paired by seed with its other methods;
#   rebuilt20  (amendment 10) finetune and finetune_replay on 20 labelled images from a rebuilt source model (pairs 1-2,
#              whose labels20 bases are gone; no ACTE stage);
#   oracle20   (amendment 2) tmt's trust and mask parts alone (--tmt_parts trust mask) on 20 labelled images, fed the
#              error oracle (the source model's wrong pixels, from the labels), then ACTE's map, then shuffled maps.
# Extra arguments go last to every train.py call (e.g. a held-out split); their runs go to their own folders.
set -euo pipefail
SOURCE=$1 TARGET=$2 OUT=$3
shift 3
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
DEIT=${DEIT:-facebook/deit-tiny-patch16-224}
BACKBONE="--model_name_or_path $DEIT"
[ "$DEIT" = scratch ] && BACKBONE="--model_name_or_path tiny"
ARM=${ARM:-labels20}
TAG=$ARM
[ $# -gt 0 ] && TAG=$ARM-$(echo "$*" | tr -cs 'A-Za-z0-9' '_' | sed 's/^_//; s/_$//')

# Each domain's data flags as source (training, validation) and as target (labelled/unlabelled pool, validation),
# and the size of its labelled pool as a target.
domain() {  # domain NAME ROLE
  case "$1:$2" in
    camvid-day:source) echo "--source camvid-day --train_split train --eval_split validation" ;;
    camvid-day:target) echo "--target camvid-day --target_train_split train --target_eval_split validation --num_target_unlabeled 305" ;;
    camvid-dusk:target) echo "--target camvid-dusk --target_train_split train[:40] --target_eval_split test --num_target_unlabeled 40" ;;
    idd-lite:source) echo "--source idd-lite --train_split train[:1150] --eval_split train[1150:]" ;;
    idd-lite:target) echo "--target idd-lite --target_train_split train[:1150] --target_eval_split train[1150:] --num_target_unlabeled 400" ;;
    camvid-day:pool) echo 305 ;;
    camvid-dusk:pool) echo 40 ;;
    idd-lite:pool) echo 1150 ;;
    *) echo "unsupported: $1 as $2" >&2; exit 2 ;;
  esac
}
ORACLE= ALIGN= REPLAY= ACTE_STAGE=yes
case $ARM in  # ARM: labelled images, methods, the method run again with shuffled maps, the paper's stage, the oracle's
  labels20 | labels5) ARM_ARGS="--target_train_samples ${ARM#labels}" METHODS="finetune selftrain tmt" SHUFFLED=tmt PAPER=tmt_paper ;;
  labels0) ARM_ARGS="--target_train_samples 0" METHODS="selftrain tmt" SHUFFLED=tmt PAPER= ;;
  labelsall) ARM_ARGS="--target_train_samples $(domain "$TARGET" pool)" METHODS="finetune finetune_tma" SHUFFLED=finetune_tma PAPER=tmt_paper ALIGN=align_patch ;;
  labelsall1200) ARM_ARGS="--target_train_samples $(domain "$TARGET" pool) --transfer_steps 1200" METHODS="finetune finetune_tma" SHUFFLED=finetune_tma PAPER=tmt_paper ;;
  steps600) ARM_ARGS="--target_train_samples 20 --transfer_steps 600" METHODS="finetune selftrain tmt" SHUFFLED=tmt PAPER=tmt_paper REPLAY=finetune_replay ;;
  oracle20) ARM_ARGS="--target_train_samples 20 --tmt_parts trust mask" METHODS=tmt SHUFFLED=tmt PAPER= ORACLE=tmt ;;
  rebuilt20) ARM_ARGS="--target_train_samples 20" METHODS="finetune finetune_replay" SHUFFLED= PAPER= ACTE_STAGE= ;;
  replay20 | replay5) ARM_ARGS="--target_train_samples ${ARM#replay}" METHODS= SHUFFLED= PAPER= REPLAY=finetune_replay ACTE_STAGE= TAG=labels${ARM#replay}${TAG#"$ARM"} ;;
  *) echo "unsupported ARM: $ARM" >&2; exit 2 ;;
esac
SPACE=idd_level1
[ "$SOURCE:$TARGET" = camvid-day:camvid-dusk ] && SPACE=cityscapes
PAIR="$OUT/${SOURCE}2${TARGET}"
TRAIN="python $REPO/examples/research/train_variants.py --resume_from_checkpoint latest --checkpointing_steps 100
  $(domain "$SOURCE" source) $(domain "$TARGET" target) --data_dir idd-lite --label_space $SPACE
  $BACKBONE --image_size 192 256 --crop_size 192 256 --num_source_train 1150 --num_eval 253"
BASE="--source_model $PAIR/base/source --acte_model $PAIR/base/acte"
TRANSFER="$TRAIN --stage transfer $BASE --labelled_draw random $ARM_ARGS"

$TRAIN --stage source --seed 42 --output_dir "$PAIR/base" "$@"
[ -z "$ACTE_STAGE" ] || $TRAIN --stage acte --seed 42 --output_dir "$PAIR/base" "$@"  # replay uses no map
for seed in 42 1 2; do
  [ -z "$ORACLE" ] || $TRANSFER --seed $seed --method $ORACLE --focus_map error_oracle --output_dir "$PAIR/$TAG-seed$seed-oracle" "$@"
done
for seed in 42 1 2; do
  [ -z "$REPLAY" ] || $TRANSFER --seed $seed --method $REPLAY --output_dir "$PAIR/$TAG-seed$seed-replay" "$@"
done
for seed in 42 1 2; do
  [ -z "$METHODS" ] || $TRANSFER --seed $seed --method $METHODS --output_dir "$PAIR/$TAG-seed$seed" "$@"
  [ -z "$SHUFFLED" ] || $TRANSFER --seed $seed --method $SHUFFLED --focus_map shuffled --output_dir "$PAIR/$TAG-seed$seed-shuffled" "$@"
done
for seed in 42 1 2; do
  [ -z "$PAPER" ] || $TRANSFER --seed $seed --method $PAPER --output_dir "$PAIR/$TAG-seed$seed-paper" "$@"
done
for seed in 42 1 2; do
  [ -z "$ALIGN" ] || $TRANSFER --seed $seed --method $ALIGN --output_dir "$PAIR/$TAG-seed$seed-align" "$@"
done
