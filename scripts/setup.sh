#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with the pinned requirements,
# the sam2med package installed from lib/, and the bundled sample datasets built.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade "pip>=24" "setuptools>=70" wheel
# torch first, so that sam2's sdist builds against it (no build isolation: isolation would pull the newest
# torch with its CUDA stack into a throw-away build environment).
$PIP install -q "$(grep -E "^torch==" requirements.txt)" "$(grep -E "^torchvision==" requirements.txt)"
SAM2_BUILD_CUDA=0 $PIP install -q --no-build-isolation -c requirements.txt "$(grep -E "^sam2==" requirements.txt)"
$PIP install -q -r requirements.txt
$PIP install -q --no-deps -e .
.venv/bin/python main.py samples
