#!/usr/bin/env bash
# The prepared GPU check (issue 17): test suite, trainers under fp32/fp16/bf16/amp, benchmarks
# at the ViT-B/16 shape on CUDA, a kernel-launch profile; results in one folder
# (summary.json, summary.md, tests.log, tests.xml, train.log, bench.log).
#
# usage: bash bench/gpu_check.sh [OUT_DIR] [--budget-seconds 480] [--cpu-dry-run] [--site DIR] [...]
#        bash bench/gpu_check.sh --pack-site DIR    # here: copy the modules a bare CUDA image lacks
#   OUT_DIR: default $OUT if set, else ./gpu_check_out.  PYTHON: interpreter (default python3).
#   --site DIR: put DIR (made by --pack-site) on PYTHONPATH; DIR/_fallback too where the
#   interpreter has no pkg_resources.  Other options: python bench/gpu_check.py --help.
# Exit status: 0 all checks passed, 1 a check failed, 3 a stage skipped or stopped (time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
ARGS=()
SITE=
while [ $# -gt 0 ]; do
    case "$1" in
        --site)
            [ $# -ge 2 ] || { echo "error: --site needs a folder" >&2; exit 2; }
            SITE=$(cd "$2" && pwd) || { echo "error: --site $2: no such folder" >&2; exit 2; }
            shift 2
            ;;
        *)
            ARGS+=("$1")
            shift
            ;;
    esac
done
export PYTHONUNBUFFERED=1
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$SITE" ]; then
    PYTHONPATH=$PYTHONPATH:$SITE
    if ! "$PYTHON" -c "import pkg_resources" 2>/dev/null; then PYTHONPATH=$PYTHONPATH:$SITE/_fallback; fi
fi
export PYTHONPATH
exec "$PYTHON" bench/gpu_check.py ${ARGS[@]+"${ARGS[@]}"}
