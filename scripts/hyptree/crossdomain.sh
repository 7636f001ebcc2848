#!/usr/bin/env bash
# Cross-domain protocol: per seed, train on ImageNet (SHOTS=16 shots), then evaluate the
# final checkpoint on ImageNet-V2, -Sketch, -A and -R (each with the ImageNet tree cut
# down to its classes), and print the source / target tables.
#
# usage: bash scripts/hyptree/crossdomain.sh [SEED ...] [-- YACS_OPTS ...]
#   SOURCE  (imagenet) and TARGETS ("imagenetv2 imagenet_sketch imagenet_a imagenet_r")
#   can be changed from the environment; the rest as in scripts/hyptree/common.sh.
# Layout:
#   $OUT/crossdomain/train/$SOURCE/shots_$SHOTS/$TRAINER/$RUN_NAME/seed$SEED
#   $OUT/crossdomain/test/$TARGET/shots_$SHOTS/$TRAINER/$RUN_NAME/seed$SEED
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SOURCE=${SOURCE:-imagenet}
read -r -a TARGET_LIST <<< "${TARGETS:-imagenetv2 imagenet_sketch imagenet_a imagenet_r}"
hyptree_parse_seeds "$@"
hyptree_setup
SCFG=$(hyptree_dataset_cfg "$SOURCE")
TCFGS=()
for T in "${TARGET_LIST[@]}"; do TCFGS+=("$(hyptree_dataset_cfg "$T")"); done

for SEED in "${SEEDS[@]}"; do
    TAIL=shots_${SHOTS}/${TRAINER}/${RUN_NAME}/seed${SEED}
    TRAIN_DIR=${OUT}/crossdomain/train/${SOURCE}/${TAIL}
    OPTS=(DATASET.NUM_SHOTS "$SHOTS" "${BASE_OPTS[@]}")
    hyptree_train "$TRAIN_DIR" "$SEED" "$SCFG" "${OPTS[@]}"
    EPOCH=$(hyptree_load_epoch "$SCFG" "${OPTS[@]}")
    for i in "${!TARGET_LIST[@]}"; do
        hyptree_eval "${OUT}/crossdomain/test/${TARGET_LIST[$i]}/${TAIL}" "$SEED" "${TCFGS[$i]}" \
            "$TRAIN_DIR" "$EPOCH" "${BASE_OPTS[@]}"
    done
done

hyptree_table "${OUT}/crossdomain" "shots_${SHOTS}" "$TRAINER" "$RUN_NAME"
