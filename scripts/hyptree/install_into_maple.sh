#!/usr/bin/env bash
# Install the HypTree plugin into an existing MaPLe / PromptSRC checkout, or take it out again.
#
# usage: bash scripts/hyptree/install_into_maple.sh /path/to/multimodal-prompt-learning
#        bash scripts/hyptree/install_into_maple.sh --uninstall /path/to/multimodal-prompt-learning
#
# First checks that `import hyptree` works from the checkout with $PYTHON (nothing is
# touched otherwise). Then copies trainers/*.py, datasets/*.py (not __init__.py),
# configs/trainers/*HypTree* and configs/trainers/CoOpHier, configs/datasets/*.yaml (into
# configs/datasets/hyptree/, so MaPLe's own sun397.yaml, imagenet.yaml, ... stay untouched)
# and scripts/hyptree/*.sh, and patches the checkout's train.py: the Dassl compat call
# (hyptree.run.dassl_compat: MaPLe's and PromptSRC's own trainers then run on current
# PyTorch too), imports of our modules, and hyptree.run.config.add_hyptree_config(cfg) after
# its extend_cfg(cfg) call. Running it again changes nothing. A file that exists there with
# different content is not overwritten unless FORCE=1. What was written and replaced is
# recorded in CHECKOUT/.hyptree/, and --uninstall restores the checkout byte for byte.
# Logic: hyptree/run/maple_patch.py.
#
# Environment: PYTHON (python), FORCE (0), DRY_RUN (0),
#              HYPTREE_REPO (the HypTree repository to install from: this script's repository,
#              or, for the copy inside an installed checkout, the one recorded there).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME_REPO=$(cd "$HERE/../.." && pwd)
if [ -n "${HYPTREE_REPO:-}" ]; then
    REPO=$HYPTREE_REPO
elif [ -f "$HOME_REPO/.hyptree/source" ]; then
    REPO=$(cat "$HOME_REPO/.hyptree/source")  # this copy lives in an installed checkout
else
    REPO=$HOME_REPO
fi
PYTHON=${PYTHON:-python}

UNINSTALL=0
if [ "${1:-}" = --uninstall ]; then
    UNINSTALL=1
    shift
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--uninstall] /path/to/maple-checkout" >&2
    exit 2
fi
TARGET=$1
[ -d "$TARGET" ] || { echo "error: $TARGET is not a folder" >&2; exit 1; }
[ -f "$REPO/hyptree/__init__.py" ] || {
    echo "error: $REPO is not a HypTree repository (no hyptree/__init__.py); set HYPTREE_REPO" >&2
    exit 1
}

run_patch() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m hyptree maple "$@"
}

if [ "$UNINSTALL" = 1 ]; then
    ARGS=(uninstall "$TARGET")
    if [ "${FORCE:-0}" = 1 ]; then ARGS+=(--force); fi
    run_patch "${ARGS[@]}"
    exit 0
fi

# the patched train.py imports hyptree: check that it can, before touching anything
if ! (cd "$TARGET" && "$PYTHON" -c "import hyptree.run.dassl_compat" >/dev/null 2>&1); then
    echo "error: 'import hyptree' fails from $TARGET with $PYTHON; nothing was changed." >&2
    echo "       Install the library into that environment first:  $PYTHON -m pip install -e $REPO" >&2
    echo "       (or the whole set-up, with Dassl:  bash $REPO/scripts/setup.sh)" >&2
    exit 1
fi
echo "hyptree is importable from $TARGET"

ARGS=(install "$TARGET" --repo "$REPO")
if [ "${FORCE:-0}" = 1 ]; then ARGS+=(--force); fi
if [ "${DRY_RUN:-0}" = 1 ]; then ARGS+=(--dry-run); fi
run_patch "${ARGS[@]}"

if ! (cd "$TARGET" && "$PYTHON" -c "import dassl" >/dev/null 2>&1); then
    echo "note: Dassl is not importable with $PYTHON; install it with  bash $REPO/scripts/setup.sh" >&2
fi
echo "done: run e.g.  cd $TARGET && bash scripts/hyptree/base2novel.sh cifar100"
echo "      undo with  bash $REPO/scripts/hyptree/install_into_maple.sh --uninstall $TARGET"
