#!/usr/bin/env bash
# The main job on the bundled sample data: propagate the white-matter seed of the MNI152 sample through
# a slice range with SAM2.1-tiny, then serve the app (OHIF at http://127.0.0.1:8000/ohif/).
#   DEMO_SERVE=0 bash scripts/demo.sh   propagate only
#   CHECKPOINT=/path/sam2.1_hiera_tiny.pt bash scripts/demo.sh   use a local checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: run 'bash scripts/setup.sh' first" >&2; exit 2; }
[ -f sample-datasets/samples.json ] || $PY main.py samples

CHECKPOINT=${CHECKPOINT:-}
if [ -z "$CHECKPOINT" ]; then
  if $PY main.py download --model tiny; then
    CHECKPOINT=$($PY -c "from sam2med.checkpoints import cache_dir, MODELS; print(cache_dir() / MODELS['tiny'].filename)")
  else
    CHECKPOINT=checkpoints/sam2.1_hiera_tiny.RANDOM-WEIGHTS.pt
    echo "WARNING: the official SAM2.1 checkpoint could not be downloaded (see the line above)." >&2
    echo "WARNING: running with RANDOM weights: this shows the plumbing and the speed, NOT segmentation quality." >&2
    [ -f "$CHECKPOINT" ] || $PY main.py download --model tiny --random-weights "$CHECKPOINT"
  fi
fi

read -r SEED SLICE < <($PY -c "import json; s = json.load(open('sample-datasets/samples.json'))['seed']; print(s['file'], s['slice'])")
mkdir -p demo-output
# seed slice +-5: a quick run on CPU (about 3 s a slice at the model's 1024 px); widen it on a GPU.
$PY main.py propagate sample-datasets/mni152_t1_2mm.nii.gz --seed "sample-datasets/$SEED" \
  --range $((SLICE - 5)) $((SLICE + 5)) --checkpoint "$CHECKPOINT" \
  -o demo-output/mni152_t1_2mm_white_matter.nii.gz --scores demo-output/scores.json

if [ "${DEMO_SERVE:-1}" != "0" ]; then
  exec $PY main.py serve --studies sample-datasets --checkpoint "$CHECKPOINT" --host 127.0.0.1 --port "${PORT:-8000}"
fi
