#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, PyTorch already installed and no network, install the engine
# profile from a bundle and record, in under 8 minutes, JSON under OUT_DIR (docs/performance.md, "GPU check"):
#   bash scripts/gpu_check.sh OUT_DIR [--bundle DIR] [--venv DIR] [--device cuda|cuda:N|cpu] [--reduced]
#                                     [--data DIR] [--checkpoint PT] [--timeout SECONDS]
# --bundle    a bundle built with network: bash scripts/bundle.sh DIR --profile engine --use-system-torch
#             [--checkpoints tiny]  (default: bundles/engine in this checkout)
# --venv      install into this existing venv that holds torch (default: a new OUT_DIR/venv that sees the
#             system's site-packages, where the image's torch is; PYTHON picks the interpreter)
# --data      the folder with example_ct_sm.nii.gz and example_seg.nii.gz (default ../shared/data/totalsegmentator)
# --checkpoint  else the bundle's tiny checkpoint, else one with RANDOM weights (speed and memory only)
# --reduced   256 px and a few slices: the end-to-end test of this script on a CPU (tests/bundle)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "error: $*" >&2; exit 2; }

OUT="" BUNDLE="$REPO/bundles/engine" VENV="" DEVICE=cuda REDUCED=() DATA="$REPO/../shared/data/totalsegmentator" CHECKPOINT="" TIMEOUT=480
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=${2:?}; shift 2 ;;
    --venv) VENV=${2:?}; shift 2 ;;
    --device) DEVICE=${2:?}; shift 2 ;;
    --reduced) REDUCED=(--reduced); shift ;;
    --data) DATA=${2:?}; shift 2 ;;
    --checkpoint) CHECKPOINT=${2:?}; shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$OUT" ] || die "give one OUT_DIR (got $OUT and $1)"; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || die "usage: bash scripts/gpu_check.sh OUT_DIR [--bundle DIR] [--venv DIR] [--device cuda|cpu] [--reduced] (see --help)"
[ -f "$BUNDLE/install.sh" ] || die "no bundle at $BUNDLE: build one where there is network: bash scripts/bundle.sh $BUNDLE --profile engine --use-system-torch"
CT="$DATA/example_ct_sm.nii.gz" SEG="$DATA/example_seg.nii.gz"
[ -f "$CT" ] && [ -f "$SEG" ] || die "$DATA lacks example_ct_sm.nii.gz and example_seg.nii.gz (give --data DIR)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)

if [ -n "$VENV" ]; then
  [ -x "$VENV/bin/python" ] || die "--venv $VENV holds no Python"
  TORCH_PY="$VENV/bin/python"
else
  VENV="$OUT/venv"
  TORCH_PY=${PYTHON:-python3}
fi
"$TORCH_PY" -c "import torch" 2>/dev/null || die "$TORCH_PY cannot import torch: the GPU check uses the PyTorch already installed (PyTorch/NGC image)"
if [[ "$DEVICE" == cuda* ]]; then
  "$TORCH_PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || die "--device $DEVICE: this torch sees no CUDA GPU ($("$TORCH_PY" -c 'import torch; print(torch.__version__)'))"
fi

echo "gpu check: installing the engine profile from $BUNDLE into $VENV"
bash "$BUNDLE/install.sh" "$VENV"
PY="$VENV/bin/python"
INSTALLED=$(date +%s)

if [ -z "$CHECKPOINT" ]; then
  CACHED=$("$PY" -c "from sam2med.checkpoints import cache_dir; print(cache_dir() / 'sam2.1_hiera_tiny.pt')")
  if [ -f "$BUNDLE/checkpoints/sam2.1_hiera_tiny.pt" ] && [ -f "$CACHED" ]; then
    CHECKPOINT=$CACHED
  else
    CHECKPOINT="$OUT/checkpoints/sam2.1_hiera_tiny.RANDOM-WEIGHTS.pt"
    echo "gpu check: no real checkpoint in the bundle: RANDOM weights (speed and memory, not quality)"
    [ -f "$CHECKPOINT" ] || "$VENV/bin/sam2med" download --model tiny --random-weights "$CHECKPOINT" >/dev/null
  fi
fi

LEFT=$((TIMEOUT - (INSTALLED - START)))
[ "$LEFT" -gt 30 ] || die "the install took $((INSTALLED - START)) s of the ${TIMEOUT} s: nothing left for the check"
set +e
timeout "$LEFT" "$PY" -m sam2med.gpucheck "$OUT" --ct "$CT" --seg "$SEG" --checkpoint "$CHECKPOINT" --device "$DEVICE" \
  "${REDUCED[@]}" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
set -e
END=$(date +%s)
"$PY" - "$OUT/gpu_check.json" "$((INSTALLED - START))" "$((END - START))" "$rc" <<'EOF'
import json, sys
from pathlib import Path
path, install_s, total_s, rc = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
summary = json.loads(path.read_text()) if path.exists() else {"steps": {}, "ok": False}
summary.update(install_s=install_s, total_s=total_s, exit_code=rc, timed_out=rc == 124)
if rc == 124:
    summary["ok"] = False
path.write_text(json.dumps(summary, indent=2))
EOF
if [ "$rc" = 124 ]; then echo "error: the GPU check ran past ${TIMEOUT} s in all (steps done so far: $OUT/gpu_check.json)" >&2; exit 1; fi
echo "gpu check: $((END - START)) s in all (install $((INSTALLED - START)) s); results in $OUT/gpu_check.json"
exit "$rc"
