#!/usr/bin/env bash
# Base-to-novel protocol: per seed, train on the base classes, then evaluate the final
# checkpoint on the novel classes (with the novel sub-tree), and print Base / Novel / H.
#
# usage: bash scripts/hyptree/base2novel.sh DATASET [SEED ...] [-- YACS_OPTS ...]
#   DATASET: a config name in configs/datasets (cifar100, sun397, imagenet, rare_species, toy)
#   SEEDs default to 1 2 3. Environment: see scripts/hyptree/common.sh
#   (TRAINER, PRESET, CFG, DATA, SHOTS, OUT, PYTHON, EXTRA_OPTS, LOAD_EPOCH, ...);
#   TEST_BASE=1 also runs an eval-only test on the base classes into test_base/
#   (by default Base is the final test of the training run).
# Layout (MaPLe's):
#   $OUT/base2new/train_base/$DATASET/shots_$SHOTS/$TRAINER/$RUN_NAME/seed$SEED
#   $OUT/base2new/test_new/$DATASET/shots_$SHOTS/$TRAINER/$RUN_NAME/seed$SEED
# Finished runs (results.json present) are skipped; unfinished training resumes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || hyptree_die "usage: $0 DATASET [SEED ...] [-- YACS_OPTS ...]"
DATASET=$1
shift
hyptree_sweep base2novel --datasets "$DATASET" --seeds "$@"
