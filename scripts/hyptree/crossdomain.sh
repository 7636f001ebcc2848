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

hyptree_sweep crossdomain --seeds "$@"
