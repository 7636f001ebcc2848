# Shared by the HypTree protocol scripts (sourced, not run).
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

TRAINER=${TRAINER:-MaPLeHypTree}
PRESET=${PRESET:-hyptree}
CFG_GIVEN=${CFG:+1}
CFG=${CFG:-$PRESET}
DATA=${DATA:-./data}
SHOTS=${SHOTS:-16}
OUT=${OUT:-output}
PYTHON=${PYTHON:-python}
EXTRA_OPTS=${EXTRA_OPTS:-}
LOAD_EPOCH=${LOAD_EPOCH:-}
TRAIN_PY=${TRAIN_PY:-train.py}
TRAINER_CONFIGS=${TRAINER_CONFIGS:-configs/trainers}
if [ -z "${DATASET_CONFIGS:-}" ]; then
    if [ -d configs/datasets/hyptree ]; then
        DATASET_CONFIGS=configs/datasets/hyptree  # installed into a MaPLe checkout
    else
        DATASET_CONFIGS=configs/datasets
    fi
fi
hyptree_run_name() {
    if [ -z "${RUN_NAME_GIVEN:-}" ]; then
        if [ "$CFG" = "$PRESET" ]; then RUN_NAME=$CFG; else RUN_NAME=${CFG}_${PRESET}; fi
    fi
}
RUN_NAME_GIVEN=${RUN_NAME:+1}
hyptree_run_name

hyptree_die() {
    echo "error: $*" >&2
    exit 1
}

# SEEDS (array) and CLI_OPTS (array) from "SEED... [-- OPTS...]"
hyptree_parse_seeds() {
    SEEDS=()
    CLI_OPTS=()
    while [ $# -gt 0 ]; do
        if [ "$1" = "--" ]; then
            shift
            CLI_OPTS=("$@")
            break
        fi
        [[ "$1" =~ ^[0-9]+$ ]] || hyptree_die "seed must be a non-negative integer, got '$1'"
        SEEDS+=("$1")
        shift
    done
    if [ ${#SEEDS[@]} -eq 0 ]; then SEEDS=(1 2 3); fi
}

# Checks and the option lists every run gets; sets TRAINER_CFG, BASE_OPTS.
hyptree_setup() {
    # the toy datasets default to the tiny CPU config (their default CLIP is a 32 px tiny one)
    if [ -z "$CFG_GIVEN" ] && [[ "${DATASET:-}" == toy* ]]; then
        CFG=tiny_cpu
        hyptree_run_name
    fi
    [ -f "$TRAIN_PY" ] || hyptree_die "$TRAIN_PY not found in $PWD; run the script from the repository root (or set TRAIN_PY)"
    [[ "$SHOTS" =~ ^[0-9]+$ ]] || hyptree_die "SHOTS must be an integer, got '$SHOTS'"
    TRAINER_CFG=${TRAINER_CONFIGS}/${TRAINER}/${CFG}.yaml
    [ -f "$TRAINER_CFG" ] || hyptree_die "trainer config $TRAINER_CFG not found (TRAINER=$TRAINER, CFG=$CFG); available: $(ls "${TRAINER_CONFIGS}/${TRAINER}" 2>/dev/null | tr '\n' ' ')"
    local extra=()
    eval "extra=( $EXTRA_OPTS )" || hyptree_die "EXTRA_OPTS does not parse: $EXTRA_OPTS"
    BASE_OPTS=(TRAINER.HYPTREE.PRESET "$PRESET" ${extra[@]+"${extra[@]}"} ${CLI_OPTS[@]+"${CLI_OPTS[@]}"})
}

hyptree_dataset_cfg() {
    local cfg=${DATASET_CONFIGS}/$1.yaml
    [ -f "$cfg" ] || hyptree_die "dataset config $cfg not found; available: $(ls "$DATASET_CONFIGS" 2>/dev/null | sed 's/\.yaml//' | tr '\n' ' ')"
    echo "$cfg"
}

# hyptree_load_epoch DATASET_CFG OPTS... : the epoch whose checkpoint eval-only runs load
hyptree_load_epoch() {
    if [ -n "$LOAD_EPOCH" ]; then
        echo "$LOAD_EPOCH"
        return
    fi
    local dcfg=$1
    shift
    "$PYTHON" -m hyptree protocols max-epoch "$dcfg" "$TRAINER_CFG" -- "$@"
}

# hyptree_train DIR SEED DATASET_CFG OPTS... : train, skipping finished and resuming unfinished runs
hyptree_train() {
    local dir=$1 seed=$2 dcfg=$3
    shift 3
    local resume=()
    if "$PYTHON" -m hyptree protocols done "$dir"; then
        echo "[skip] $dir has results.json"
        return 0
    elif [ -d "$dir" ]; then
        echo "[resume] $dir"
        resume=(--resume "$dir")
    else
        echo "[train] $dir"
    fi
    hyptree_run "$dir" "$seed" "$dcfg" ${resume[@]+"${resume[@]}"} "$@"
}

# hyptree_eval DIR SEED DATASET_CFG MODEL_DIR EPOCH OPTS... : eval-only, skipped when finished
hyptree_eval() {
    local dir=$1 seed=$2 dcfg=$3 model_dir=$4 epoch=$5
    shift 5
    if "$PYTHON" -m hyptree protocols done "$dir"; then
        echo "[skip] $dir has results.json"
        return 0
    fi
    [ -d "$model_dir" ] || hyptree_die "no trained model at $model_dir (train it first)"
    echo "[eval] $dir (model $model_dir, epoch $epoch)"
    hyptree_run "$dir" "$seed" "$dcfg" --model-dir "$model_dir" --load-epoch "$epoch" --eval-only "$@"
}

# hyptree_run DIR SEED DATASET_CFG ARGS... : one train.py call with the protocol's common flags
hyptree_run() {
    local dir=$1 seed=$2 dcfg=$3
    shift 3
    "$PYTHON" "$TRAIN_PY" \
        --root "$DATA" \
        --seed "$seed" \
        --trainer "$TRAINER" \
        --dataset-config-file "$dcfg" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$dir" \
        "$@"
}

# hyptree_table ROOT MATCH... : print the mean +- std table of the runs just made
hyptree_table() {
    local root=$1
    shift
    echo
    "$PYTHON" -m hyptree results "$root" --seeds "${SEEDS[@]}" --match "$@"
}
