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
DATASET=$1
shift
hyptree_sweep ablation --datasets "$DATASET" --seeds "$@"
