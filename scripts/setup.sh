#!/usr/bin/env bash
# Set up HypTree with Dassl in the current Python environment (a virtual environment is best).
#
# usage: bash scripts/setup.sh [--dassl git|PATH]
#
#   --dassl git    (default) Dassl from https://github.com/KaiyangZhou/Dassl.pytorch
#   --dassl PATH   a Dassl checkout or a built wheel (machines without GitHub access)
#
# Installs, in this order:
#   1. HypTree itself, editable, with the test tools:   pip install -e ".[test]"
#   2. what Dassl's setup.py imports while building:    numpy, setuptools<81, wheel
#   3. Dassl without its pinned requirements (2019 linters, tb-nightly, wilds==1.2.2) and
#      without build isolation (its setup.py imports numpy):  --no-deps --no-build-isolation
#   4. what Dassl imports at run time: yacs tensorboard tabulate gdown wilds scipy
#      scikit-learn tqdm ftfy regex
# then checks that `import hyptree` and `import dassl.engine` work.
#
# Environment: PYTHON (python3; the interpreter the final import check runs), PIP (the pip
#   command; default "$PYTHON -m pip"), e.g. as .ci/run does:
#   PYTHON=.venv/bin/python PIP="env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/python -m pip"
set -euo pipefail

DASSL_GIT=git+https://github.com/KaiyangZhou/Dassl.pytorch
DASSL_RUNTIME=(yacs tensorboard tabulate gdown wilds scipy scikit-learn tqdm ftfy regex)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
case "$PYTHON" in */*) PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON") ;; esac  # the check runs in /
read -r -a PIP_CMD <<< "${PIP:-$PYTHON -m pip}"

die() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

DASSL=git
while [ $# -gt 0 ]; do
    case "$1" in
        --dassl)
            [ $# -ge 2 ] || die "--dassl needs a value: git, a Dassl checkout or a wheel"
            DASSL=$2
            shift 2
            ;;
        -h | --help)
            sed -n '2,20p' "$0"
            exit 0
            ;;
        *) die "unknown argument '$1' (usage: bash scripts/setup.sh [--dassl git|PATH])" ;;
    esac
done

if [ "$DASSL" = git ]; then
    DASSL_SRC=$DASSL_GIT
elif [ -f "$DASSL" ] && [[ "$DASSL" == *.whl ]]; then
    DASSL_SRC=$(cd "$(dirname "$DASSL")" && pwd)/$(basename "$DASSL")
elif [ -f "$DASSL/setup.py" ] && [ -d "$DASSL/dassl" ]; then
    DASSL_SRC=$(cd "$DASSL" && pwd)
else
    die "--dassl $DASSL: neither 'git', a Dassl wheel (*.whl) nor a Dassl checkout (setup.py and dassl/)"
fi

pip_install() {
    echo "+ ${PIP_CMD[*]} install $*"
    "${PIP_CMD[@]}" install --progress-bar off "$@"
}

echo "== 1/4 HypTree ($REPO)"
pip_install -e "$REPO[test]"
echo "== 2/4 Dassl's build requirements"
pip_install numpy "setuptools<81" wheel
echo "== 3/4 Dassl from $DASSL_SRC (no pinned requirements, no build isolation)"
pip_install --no-deps --no-build-isolation "$DASSL_SRC"
echo "== 4/4 Dassl's run-time dependencies"
pip_install "${DASSL_RUNTIME[@]}"

CHECK='import dassl, dassl.engine, hyptree, torch; print("ok: hyptree", hyptree.__file__, "dassl", dassl.__version__, "torch", torch.__version__)'
(cd / && "$PYTHON" -W ignore -c "$CHECK") || die "the installed packages do not import with $PYTHON (set PYTHON to the interpreter PIP installs into)"
echo "done: run the tests with  python -m pytest"
