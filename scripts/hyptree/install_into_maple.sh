#!/usr/bin/env bash
# Install the HypTree plugin into an existing MaPLe / PromptSRC checkout.
#
# usage: bash scripts/hyptree/install_into_maple.sh /path/to/multimodal-prompt-learning
#
# Copies trainers/*.py, datasets/*.py (not __init__.py), configs/trainers/*HypTree* and
# configs/trainers/CoOpHier, configs/datasets/*.yaml (into configs/datasets/hyptree/, so
# MaPLe's own sun397.yaml, imagenet.yaml, ... stay untouched) and scripts/hyptree/*.sh,
# then patches the checkout's train.py: imports of our modules and
# hyptree.run.config.add_hyptree_config(cfg) after its extend_cfg(cfg) call. Running it
# again changes nothing. A file that exists there with different content is not
# overwritten unless FORCE=1. Logic: hyptree/maple_patch.py.
#
# Environment: PYTHON (python), FORCE (0), DRY_RUN (0),
#              HYPTREE_REPO (this repository: the folder two levels above this script).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${HYPTREE_REPO:-$(cd "$HERE/../.." && pwd)}
PYTHON=${PYTHON:-python}

if [ $# -ne 1 ]; then
    echo "usage: $0 /path/to/maple-checkout" >&2
    exit 2
fi
TARGET=$1
[ -d "$TARGET" ] || { echo "error: $TARGET is not a folder" >&2; exit 1; }

ARGS=(install "$TARGET" --repo "$REPO")
if [ "${FORCE:-0}" = 1 ]; then ARGS+=(--force); fi
if [ "${DRY_RUN:-0}" = 1 ]; then ARGS+=(--dry-run); fi

# the installer itself runs from this repository, installed or not
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m hyptree maple "${ARGS[@]}"

# the checkout's train.py imports hyptree: it must be importable from there
if (cd "$TARGET" && "$PYTHON" -c "import hyptree.run.config" >/dev/null 2>&1); then
    echo "hyptree is importable from $TARGET"
else
    echo "WARNING: the files are installed, but 'import hyptree' fails from $TARGET with $PYTHON." >&2
    echo "         Install the library into that environment:  $PYTHON -m pip install -e $REPO" >&2
    exit 1
fi
if ! (cd "$TARGET" && "$PYTHON" -c "import dassl" >/dev/null 2>&1); then
    echo "note: Dassl is not importable with $PYTHON; install it as MaPLe's README says." >&2
fi
echo "done: run e.g.  cd $TARGET && bash scripts/hyptree/base2novel.sh cifar100"
