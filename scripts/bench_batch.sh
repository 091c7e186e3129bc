#!/usr/bin/env bash
# Cases per minute of `evaluate` and rows per minute of `propagate-batch`, without Ray and with Ray workers
# (docs/performance.md, "Cohorts on Ray"). A cohort of $COPIES copies of the CT and of the MR in ../shared/data
# (each shifted by a few intensity units, so that no copy hits another's cached features), each its own case and
# row, in $BENCH (default /tmp/sam2med-bench); THREADS=N gives every run --threads N. SAM2 has random weights
# at 256 px here. The load average of the machine is printed with each run: compare runs only under the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BENCH=${BENCH:-/tmp/sam2med-bench}
COPIES=${COPIES:-4}
THREADS=(${THREADS:+--threads "$THREADS"})  # THREADS=N: every run, local and Ray workers, computes on N threads
DATA=$(cd ../shared/data/totalsegmentator && pwd)
rm -rf "$BENCH" && mkdir -p "$BENCH/images" "$BENCH/labels" "$BENCH/seeds"
$PY main.py download --random-weights "$BENCH/sam2.1_hiera_tiny.pt" --model tiny >/dev/null
$PY - "$DATA" "$BENCH" "$COPIES" <<'PYEOF'
import sys
import nibabel as nib
import numpy as np
data, bench, copies = sys.argv[1:]
# copy i is the image + i (1 HU, or 1 MR unit, more per copy): other voxels, so no copy reuses another's cached features
for name, image in (("ct", "example_ct_sm.nii.gz"), ("mr", "example_mr_sm.nii.gz")):
    source = nib.load(f"{data}/{image}")
    voxels = np.asarray(source.dataobj)
    for i in range(1, int(copies) + 1):
        nib.save(nib.Nifti1Image((voxels + i - 1).astype(voxels.dtype), source.affine, source.header), f"{bench}/images/{name}{i}.nii.gz")
for name, seg, value in (("ct", "example_seg.nii.gz", 5), ("mr", "example_seg_mr.nii.gz", 1)):  # liver, spleen
    s = nib.load(f"{data}/{seg}")
    truth = np.asarray(s.dataobj).astype(np.uint8)
    z = int(np.argmax((truth == value).sum(axis=(0, 1))))
    seed = np.zeros_like(truth)
    seed[..., z] = np.where(truth[..., z] == value, value, 0)
    nib.save(nib.Nifti1Image(seed, s.affine, s.header), f"{bench}/seeds/{name}.nii.gz")
PYEOF
echo "image,seed" > "$BENCH/rows.csv"
for i in $(seq 1 "$COPIES"); do
  ln -s "$DATA/example_seg.nii.gz" "$BENCH/labels/ct$i.nii.gz"; ln -s "$DATA/example_seg_mr.nii.gz" "$BENCH/labels/mr$i.nii.gz"
  echo "images/ct$i.nii.gz,seeds/ct.nii.gz" >> "$BENCH/rows.csv"; echo "images/mr$i.nii.gz,seeds/mr.nii.gz" >> "$BENCH/rows.csv"
done
cases=$((2 * COPIES))
run() {  # label, then the command; prints wall seconds and items per minute
  local name=$1; shift
  local start end
  start=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; end=$(date +%s.%N)
  echo "$name: load $(cut -d' ' -f1 /proc/loadavg) before, $(echo "$end - $start" | bc -l | xargs printf '%.1f') s, $(echo "$cases * 60 / ($end - $start)" | bc -l | xargs printf '%.1f') per minute"
}
EVAL=(main.py evaluate --images "$BENCH/images" --labels "$BENCH/labels" --labels-map "$DATA/labels.json:total"
      --label spleen --label kidney_left --label liver --label stomach --propagator registration --previews 0 "${THREADS[@]}")
BATCH=(main.py propagate-batch --manifest "$BENCH/rows.csv" --checkpoint "$BENCH/sam2.1_hiera_tiny.pt" --device cpu --image-size 256 "${THREADS[@]}")
echo "evaluate --propagator registration, $cases cases, 4 organs each:"
run "  no Ray         " $PY "${EVAL[@]}" --out "$BENCH/eval_local"
run "  Ray, 1 worker  " $PY "${EVAL[@]}" --out "$BENCH/eval_ray1" --ray local --workers 1
run "  Ray, 2 workers " $PY "${EVAL[@]}" --out "$BENCH/eval_ray2" --ray local --workers 2
echo "propagate-batch, SAM2.1 tiny (random weights) at 256 px, $cases rows, whole volumes:"
run "  no Ray         " $PY "${BATCH[@]}" -o "$BENCH/batch_local"
run "  Ray, 1 worker  " $PY "${BATCH[@]}" -o "$BENCH/batch_ray1" --ray local --workers 1
run "  Ray, 2 workers " $PY "${BATCH[@]}" -o "$BENCH/batch_ray2" --ray local --workers 2
for run in eval_ray1 eval_ray2; do
  cmp <(cut -d, -f1-9,11- "$BENCH/eval_local/results.csv") <(cut -d, -f1-9,11- "$BENCH/$run/results.csv") \
    && echo "$run/results.csv = eval_local/results.csv (every column but seconds)"
done
