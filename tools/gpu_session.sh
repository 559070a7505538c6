#!/usr/bin/env bash
# The checks and figures that need a GPU, one stage per call of the `device` tool's `run`
# (each stays under its 10-minute limit). On the lent machine fengine runs from the
# checkout (PYTHONPATH) under that image's python3 and torch; MMEngine, the peer of the
# benchmarks, is not in the image: carry it as wheels in .whl/ (ignored by git), fetched
# here once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       mmengine==0.10.7 addict yapf termcolor platformdirs
# (MMEngine's other needs, matplotlib, pyyaml, rich and OpenCV, are in the image) and name
# .whl in `carry`. Results go under $OUT (the run tool brings them back).
#
#   bash tools/gpu_session.sh tests       # the CUDA tests (pytest -m cuda)
#   bash tools/gpu_session.sh bandwidth   # gpt-1.3b from meta against the copy bandwidth
#   bash tools/gpu_session.sh init        # initialization of every preset
#   bash tools/gpu_session.sh step        # training steps (compiled, eager, MMEngine)
#
# PYTHON and DEVICE override python3 and cuda (DEVICE=cpu PYTHON=... checks the script).
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: tools/gpu_session.sh tests|bandwidth|init|step}"
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
out="${OUT:-/tmp/fengine-gpu}"
mkdir -p "$out"
if compgen -G '.whl/*.whl' >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi 2>&1 || true; "$python" -c 'import torch; print("torch", torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'; } > "$out/machine.txt"
case "$stage" in
    tests)
        "$python" -m pytest -q -p no:cacheprovider -m cuda -rs tests/ 2>&1 \
            | tee "$out/cuda-tests.txt" | tail -15 ;;
    bandwidth | init | step)
        "$python" -m bench --device "$device" --only "$stage" \
            --out "$out/$stage-$(date +%Y-%m-%d).json" 2>"$out/$stage.log" \
            | tee "$out/$stage.txt" | tail -30 ;;
    *)
        echo "unknown stage '$stage'; choose tests, bandwidth, init or step" >&2
        exit 2 ;;
esac
