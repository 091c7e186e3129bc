#!/usr/bin/env bash
# Build, on a machine with network, everything an offline (air-gapped) install of sam2med needs:
#   bash scripts/bundle.sh OUT [--profile server|engine] [--python 3.11] [--platform manylinux_2_28_x86_64]
#                              [--checkpoints tiny,medsam2] [--use-system-torch]
# OUT/wheels/      a wheel for every pinned dependency of the profile (and what they need), sam2 (built once,
#                  here, as a pure-Python wheel) and sam2med itself
# OUT/checkpoints/ the --checkpoints, as the checkpoint cache ($SAM2MED_CHECKPOINT_DIR) holds them
# OUT/install.sh   installs the bundle with no network: bash OUT/install.sh [VENV_DIR]   (default ./.venv)
# OUT/bundle.json  profile, Python, platform, requirements and the sha256 of every file
# Profiles: server = everything the app needs (MONAI Label, SimpleITK, Ray, ...; not the test tools);
#           engine = propagate, bench, evaluate on NIfTI: no MONAI Label, no SimpleITK, no Ray.
# --use-system-torch leaves torch and torchvision out: install.sh uses the ones already installed (PyTorch/NGC images).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "error: $*" >&2; exit 2; }

OUT="" PROFILE=server PYVER="" PLATFORM="" CHECKPOINTS="" SYSTEM_TORCH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=${2:?}; shift 2 ;;
    --python) PYVER=${2:?}; shift 2 ;;
    --platform) PLATFORM=${2:?}; shift 2 ;;
    --checkpoints) CHECKPOINTS=${2:?}; shift 2 ;;
    --use-system-torch) SYSTEM_TORCH=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$OUT" ] || die "give one OUT folder (got $OUT and $1)"; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || die "usage: bash scripts/bundle.sh OUT [--profile server|engine] [--python X.Y] [--platform TAG] [--checkpoints tiny,medsam2] [--use-system-torch]"
case "$PROFILE" in server|engine) ;; *) die "--profile $PROFILE: give server or engine" ;; esac
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then die "$OUT exists and is not empty"; fi
[ "$SYSTEM_TORCH" = 0 ] || [ "$PROFILE" = engine ] \
  || die "--use-system-torch is for the engine profile (MONAI Label's dependencies ask for torch and torchvision of their own)"

# The builder: the set-up's venv (sam2 is built against its torch, without build isolation, as setup.sh does).
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || die "$PY is missing: run 'bash scripts/setup.sh' first (sam2's wheel is built with its torch)"
PYVER=${PYVER:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
[[ "$PYVER" =~ ^3\.[0-9]+$ ]] || die "--python $PYVER: give a version such as 3.11"
ARCH=$(uname -m)
PLATFORM=${PLATFORM:-manylinux_2_28_$ARCH}
[[ "$PLATFORM" =~ ^manylinux_2_([0-9]+)_(.+)$ ]] || die "--platform $PLATFORM: give a tag such as manylinux_2_28_x86_64"
GLIBC_MINOR=${BASH_REMATCH[1]} PLAT_ARCH=${BASH_REMATCH[2]}
# pip takes one platform tag per --platform and does not widen manylinux_2_28 to the older manylinux tags
# that the same machine runs (numpy 1.26.4 is manylinux_2_17): list them all.
PLATFORM_ARGS=()
for ((v = GLIBC_MINOR; v >= 5; v--)); do PLATFORM_ARGS+=(--platform "manylinux_2_${v}_${PLAT_ARCH}"); done
PLATFORM_ARGS+=(--platform "manylinux2014_${PLAT_ARCH}" --platform "manylinux2010_${PLAT_ARCH}" --platform "manylinux1_${PLAT_ARCH}")
ABI="cp${PYVER/./}"

# Which pins of requirements.txt each profile takes. Test tools are never bundled.
DEV_ONLY="pytest hypothesis playwright"
# (evaluate: monai for Dice and IoU, matplotlib for its chart; its surface distances need no scipy)
ENGINE="torch torchvision sam2 numpy nibabel hydra-core tqdm pillow psutil monai matplotlib"
# sam2 is installed without its declared dependencies (so that --use-system-torch needs no torchvision from
# us); this is the rest of them that requirements.txt does not pin.
SAM2_DEPS="iopath==0.1.10"
name_of() { sed -E 's/[=<>!~ ].*//' <<<"$1" | tr 'A-Z_' 'a-z-'; }
in_list() { local n; for n in $2; do [ "$(name_of "$n")" = "$1" ] && return 0; done; return 1; }

mkdir -p "$OUT/wheels" "$OUT/checkpoints"
OUT=$(cd "$OUT" && pwd)
REQS="$OUT/requirements.txt"
: >"$REQS"
SAM2_PIN=""
while IFS= read -r line; do
  line=${line%%#*}; line=$(xargs <<<"$line")
  [ -n "$line" ] || continue
  name=$(name_of "$line")
  in_list "$name" "$DEV_ONLY" && continue
  [ "$PROFILE" = engine ] && ! in_list "$name" "$ENGINE" && continue
  [ "$SYSTEM_TORCH" = 1 ] && in_list "$name" "torch torchvision" && continue
  if [ "$name" = sam2 ]; then SAM2_PIN=$line; continue; fi
  echo "$line" >>"$REQS"
done <"$REPO/requirements.txt"
[ -n "$SAM2_PIN" ] || die "requirements.txt pins no sam2"
for dep in $SAM2_DEPS; do echo "$dep" >>"$REQS"; done
# With the system's torch, what declares torch as a dependency is installed without its dependencies (else pip would
# fetch a torch of its own): sam2 (above) and monai, whose other dependency, numpy, is pinned.
NODEPS="$OUT/requirements-nodeps.txt"
: >"$NODEPS"
if [ "$SYSTEM_TORCH" = 1 ]; then
  grep -iE '^monai==' "$REQS" >"$NODEPS" || true
  grep -viE '^monai==' "$REQS" >"$REQS.tmp" || true
  mv "$REQS.tmp" "$REQS"
fi
if [ "$PROFILE" = engine ]; then
  for name in $ENGINE; do
    [ "$SYSTEM_TORCH" = 1 ] && in_list "$name" "torch torchvision" && continue
    [ "$name" = sam2 ] || grep -qiE "^${name}==" "$REQS" "$NODEPS" || die "the engine profile needs a pin of $name in requirements.txt"
  done
fi

LOG="$OUT/bundle.log"
step() { echo "bundle: $*"; }
run_logged() { "$@" >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "$1 ${*:2:3}... failed (full log: $LOG)"; }; }
PIP=("$PY" -m pip)

step "sam2 ($SAM2_PIN), built once as a wheel against the builder's torch"
SAM2_BUILD_CUDA=0 run_logged "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "$SAM2_PIN"
step "sam2med $(sed -nE 's/^version = "(.*)"/\1/p' "$REPO/pyproject.toml") (with the MONAI Label app)"
# from a clean copy: a build in place would leave build/ and egg-info in the checkout and could reuse stale files
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/lib" "$REPO/apps" "$SRC/"
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
run_logged "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "$SRC"
step "wheels of the $PROFILE profile for Python $PYVER on $PLATFORM"
# Wheels only, for the target (not this machine). A dependency that ships only as an sdist (iopath, timeloop, ...)
# is built here into a wheel, which must be pure Python (py3-none-any) to fit the target, and the download retried.
for attempt in $(seq 1 20); do
  : >"$OUT/download.log"
  if "${PIP[@]}" download -q --only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 \
       --abi none "${PLATFORM_ARGS[@]}" -d "$OUT/wheels" --find-links "$OUT/wheels" -r "$REQS" >"$OUT/download.log" 2>&1; then
    break
  fi
  cat "$OUT/download.log" >>"$LOG"
  missing=$(sed -nE 's/^ERROR: No matching distribution found for ([^ ]+).*/\1/p' "$OUT/download.log" | head -1)
  [ -n "$missing" ] && [ "$attempt" -lt 20 ] || { grep '^ERROR' "$OUT/download.log" | tail -2 >&2; die "the wheels could not be downloaded (full log: $LOG)"; }
  step "  $missing has no wheel for the target: building it from its sdist"
  before=$(ls "$OUT/wheels")
  run_logged "${PIP[@]}" wheel -q --no-deps --no-binary "$(name_of "$missing")" -w "$OUT/wheels" "$missing"
  built=$(comm -13 <(echo "$before") <(ls "$OUT/wheels"))
  [ -n "$built" ] || die "$missing: no wheel was built (full log: $LOG)"
  case "$built" in *-none-any.whl) ;; *) die "$missing ships only as an sdist with compiled code ($built): build its wheel on a $PLATFORM machine with Python $PYVER";; esac
done
rm -f "$OUT/download.log"
if [ -s "$NODEPS" ]; then
  run_logged "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$ABI" \
    --abi abi3 --abi none "${PLATFORM_ARGS[@]}" -d "$OUT/wheels" -r "$NODEPS"
fi

if [ -n "$CHECKPOINTS" ]; then
  for model in ${CHECKPOINTS//,/ }; do
    step "checkpoint $model"
    # The real download path (sha256 and loadability checked), into the bundle's cache folder.
    SAM2MED_CHECKPOINT_DIR="$OUT/checkpoints" "$PY" "$REPO/main.py" download --model "$model" >>"$LOG" 2>&1 \
      || die "checkpoint $model: $(grep '^error:' "$LOG" | tail -1 | sed -E 's/^error: //; s/\): .*/)/') (full log: $LOG)"
  done
fi

cp "$REPO/scripts/offline_install.sh" "$OUT/install.sh"
chmod +x "$OUT/install.sh"
"$PY" - "$OUT" "$PROFILE" "$PYVER" "$PLATFORM" "$SYSTEM_TORCH" <<'EOF'
import hashlib, json, sys
from pathlib import Path
out, profile, pyver, platform, system_torch = sys.argv[1:]
out = Path(out)
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
files = {str(p.relative_to(out)): sha(p) for d in ("wheels", "checkpoints") for p in sorted((out / d).iterdir())}
manifest = {"profile": profile, "python": pyver, "platform": platform, "use_system_torch": system_torch == "1",
            "requirements": [l for l in (out / "requirements.txt").read_text().splitlines() if l],
            "files": files}
(out / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
EOF

size() { du -sh --apparent-size "$@" 2>/dev/null | tail -1 | cut -f1; }
torch_wheels=("$OUT"/wheels/torch-[0-9]*.whl "$OUT"/wheels/torchvision-*.whl)
existing=(); for f in "${torch_wheels[@]}"; do [ -f "$f" ] && existing+=("$f"); done
echo "bundle $OUT ($PROFILE profile, Python $PYVER, $PLATFORM$([ "$SYSTEM_TORCH" = 1 ] && echo ", system torch")):"
if [ ${#existing[@]} -gt 0 ]; then echo "  torch, torchvision  $(du -ch --apparent-size "${existing[@]}" | tail -1 | cut -f1)"; fi
other=$(find "$OUT/wheels" -name '*.whl' ! -name 'torch-[0-9]*' ! -name 'torchvision-*' -print0 | du -ch --apparent-size --files0-from=- | tail -1 | cut -f1)
echo "  other wheels        $other ($(find "$OUT/wheels" -name '*.whl' | wc -l) wheels in all)"
echo "  checkpoints         $(size "$OUT/checkpoints")"
echo "  total               $(size "$OUT")"
echo "install with no network: bash $OUT/install.sh [VENV_DIR]"
