# Shared by the HypTree protocol scripts (sourced, not run). The run list (folders, options,
# skip / resume / changed-options checks, the table at the end) is hyptree.run.runlist, run by
# `python -m hyptree sweep run --launcher serial`; these scripts only turn their arguments and
# environment into its flags (python -m hyptree sweep run --help; docs/protocols.md).
#
# Environment (all optional; MaPLe's script variables, read from the environment):
#   TRAINER          trainer name                        (MaPLeHypTree)
#   PRESET           vanilla | protect | hyptree         (hyptree)
#   CFG              configs/trainers/$TRAINER/$CFG.yaml (= $PRESET; tiny_cpu for DATASET toy*)
#   DATA             dataset root (train.py --root)      (./data)
#   SHOTS            shots per class                     (16)
#   OUT              output root                         (output)
#   PYTHON           python interpreter                  (python)
#   EXTRA_OPTS       yacs options appended to every run, shell-quoted,
#                    e.g. 'OPTIM.MAX_EPOCH 1 DATALOADER.TRAIN_X.BATCH_SIZE 2'
#   LOAD_EPOCH       checkpoint epoch for eval-only runs (OPTIM.MAX_EPOCH of the config)
#   RUN_NAME         run folder name ($CFG, or ${CFG}_${PRESET} when they differ)
#   DATASET_CONFIGS  dataset yaml folder (configs/datasets/hyptree if present, else configs/datasets)
#   TRAINER_CONFIGS  trainer yaml folder (configs/trainers)
#   TRAIN_PY         entry point (train.py, in the current folder)
# Options after "--" on a script's command line are appended after EXTRA_OPTS.

set -euo pipefail

PYTHON=${PYTHON:-python}

hyptree_die() {
    echo "error: $*" >&2
    exit 1
}

# hyptree_sweep PROTOCOL ARGS... : the whole protocol, serially, with the environment's settings
# (ARGS end with "--seeds SEED... [-- YACS_OPTS...]"; options after "--" come after EXTRA_OPTS)
hyptree_sweep() {
    local protocol=$1
    shift
    local args=(run --launcher serial --python "$PYTHON" --protocols "$protocol")
    [ -z "${TRAINER:-}" ] || args+=(--trainers "$TRAINER")
    [ -z "${PRESET:-}" ] || args+=(--presets "$PRESET")
    [ -z "${CFG:-}" ] || args+=(--configs "$CFG")
    [ -z "${SHOTS:-}" ] || args+=(--shots "$SHOTS")
    [ -z "${DATA:-}" ] || args+=(--data "$DATA")
    [ -z "${OUT:-}" ] || args+=(--out "$OUT")
    [ -z "${EXTRA_OPTS:-}" ] || args+=("--extra-opts=$EXTRA_OPTS")
    [ -z "${LOAD_EPOCH:-}" ] || args+=(--load-epoch "$LOAD_EPOCH")
    [ -z "${RUN_NAME:-}" ] || args+=(--run-name "$RUN_NAME")
    [ -z "${DATASET_CONFIGS:-}" ] || args+=(--dataset-configs "$DATASET_CONFIGS")
    [ -z "${TRAINER_CONFIGS:-}" ] || args+=(--trainer-configs "$TRAINER_CONFIGS")
    [ -z "${TRAIN_PY:-}" ] || args+=(--train-py "$TRAIN_PY")
    [ "${TEST_BASE:-0}" != 1 ] || args+=(--test-base)
    [ -z "${SOURCE:-}" ] || args+=(--source "$SOURCE")
    if [ -n "${TARGETS:-}" ]; then
        local targets
        read -r -a targets <<< "$TARGETS"
        args+=(--targets "${targets[@]}")
    fi
    if [ -n "${VARIANTS:-}" ]; then
        local variants
        read -r -a variants <<< "$VARIANTS"
        args+=(--variants "${variants[@]}")
    fi
    "$PYTHON" -m hyptree sweep "${args[@]}" "$@"
}
