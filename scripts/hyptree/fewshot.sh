#!/usr/bin/env bash
# Few-shot protocol: train with SHOTS shots per class on all classes (the final test
# reports LA / HCA / MTA on the full tree), then print the mean +- std table.
#
# usage: bash scripts/hyptree/fewshot.sh DATASET SHOTS [SEED ...] [-- YACS_OPTS ...]
#   SHOTS in 1 2 4 8 16 in the paper; SEEDs default to 1 2 3.
#   Environment: see scripts/hyptree/common.sh.
# Layout: $OUT/fewshot/$DATASET/shots_$SHOTS/$TRAINER/$RUN_NAME/seed$SEED
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 2 ] || hyptree_die "usage: $0 DATASET SHOTS [SEED ...] [-- YACS_OPTS ...]"
DATASET=$1
SHOTS=$2
shift 2
hyptree_sweep fewshot --datasets "$DATASET" --shots "$SHOTS" --seeds "$@"
