#!/usr/bin/env bash
# Ablations of the hyptree preset: curvature modes (euclidean / shared / separate /
# frozen), no image tree, no pass-through, angle or MMD cross terms - yacs options on
# top of the config (list: python -m hyptree protocols ablations). Each variant trains
# into its own folder; the table lists them side by side.
#
# usage: bash scripts/hyptree/ablation.sh DATASET [SEED ...] [-- YACS_OPTS ...]
#   VARIANTS="euclidean no_image_tree ..." runs a subset (default: all, "full" included).
#   Environment: see scripts/hyptree/common.sh (PRESET must stay hyptree).
# Layout: $OUT/ablation/$DATASET/shots_$SHOTS/$TRAINER/$RUN_NAME/$VARIANT/seed$SEED
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || hyptree_die "usage: $0 DATASET [SEED ...] [-- YACS_OPTS ...]"
[ "$PRESET" = hyptree ] || hyptree_die "ablations modify the hyptree preset; PRESET=$PRESET"
DATASET=$1
shift
hyptree_parse_seeds "$@"
hyptree_setup
DCFG=$(hyptree_dataset_cfg "$DATASET")
read -r -a VARIANT_LIST <<< "${VARIANTS:-}"
LISTING=$("$PYTHON" -m hyptree protocols ablations ${VARIANT_LIST[@]+"${VARIANT_LIST[@]}"})

while IFS=$'\t' read -r VARIANT VOPTS; do
    read -r -a VOPTS_A <<< "$VOPTS"
    for SEED in "${SEEDS[@]}"; do
        DIR=${OUT}/ablation/${DATASET}/shots_${SHOTS}/${TRAINER}/${RUN_NAME}/${VARIANT}/seed${SEED}
        # variant options come after the preset's and before EXTRA_OPTS / command-line ones
        hyptree_train "$DIR" "$SEED" "$DCFG" DATASET.NUM_SHOTS "$SHOTS" \
            TRAINER.HYPTREE.PRESET "$PRESET" ${VOPTS_A[@]+"${VOPTS_A[@]}"} "${BASE_OPTS[@]}"
    done
done <<< "$LISTING"

hyptree_table "${OUT}/ablation" "$DATASET" "shots_${SHOTS}" "$TRAINER" "$RUN_NAME"
