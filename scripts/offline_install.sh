#!/usr/bin/env bash
# Install sam2med from this bundle (made by scripts/bundle.sh) with no network:
#   bash install.sh [VENV_DIR]        default ./.venv; PYTHON=python3.X picks the interpreter of a new venv
# A VENV_DIR that already holds a Python is installed into (e.g. a venv that holds only torch); otherwise a
# new venv is made (with --system-site-packages for a bundle built with --use-system-torch, so that the
# image's torch is used). pip reads only this bundle's wheels: no index, no config, no cache.
# Checkpoints of the bundle are copied into the checkpoint cache ($SAM2MED_CHECKPOINT_DIR, else
# ~/.cache/sam2med/checkpoints). Any problem ends with one `error:` line and exit code 2.
set -euo pipefail
BUNDLE=$(cd "$(dirname "$0")" && pwd)
die() { echo "error: $*" >&2; exit 2; }
[ $# -le 1 ] || die "usage: bash install.sh [VENV_DIR]"
VENV=${1:-./.venv}
[ -f "$BUNDLE/bundle.json" ] || die "$BUNDLE/bundle.json is missing: not a sam2med bundle (build one with scripts/bundle.sh)"

if [ -x "$VENV/bin/python" ]; then
  PY="$VENV/bin/python"
else
  PY=${PYTHON:-python3}
  command -v "$PY" >/dev/null || die "$PY not found: set PYTHON to a Python 3 interpreter"
fi
# Everything the bundle says about itself is checked before anything is installed.
"$PY" - "$BUNDLE" <<'EOF' || exit 2
import hashlib, json, sys
from pathlib import Path
bundle = Path(sys.argv[1])
def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
try:
    manifest = json.loads((bundle / "bundle.json").read_text())
    wanted, files = manifest["python"], manifest["files"]
except (OSError, ValueError, KeyError) as err:
    fail(f"{bundle / 'bundle.json'} is unreadable ({err}): rebuild the bundle with scripts/bundle.sh")
have = "%d.%d" % sys.version_info[:2]
if have != wanted:
    fail(f"this bundle is for Python {wanted}, {sys.executable} is Python {have}: run with PYTHON=python{wanted}, "
         f"or build a bundle with scripts/bundle.sh --python {have}")
for name, digest in files.items():
    path = bundle / name
    if not path.is_file():
        fail(f"the bundle is incomplete: {name} is missing (rebuild it with scripts/bundle.sh)")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != digest:
        fail(f"the bundle is damaged: {name} does not match its sha256 in bundle.json (copy it again)")
if manifest.get("use_system_torch"):
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        fail(f"this bundle was built with --use-system-torch but {sys.executable} has no torch: install PyTorch "
             f"first, or use a bundle built without --use-system-torch")
EOF
SYSTEM_TORCH=$("$PY" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["use_system_torch"]))' "$BUNDLE/bundle.json")

if [ ! -x "$VENV/bin/python" ]; then
  VENV_ARGS=()
  [ "$SYSTEM_TORCH" = 1 ] && VENV_ARGS+=(--system-site-packages)
  "$PY" -m venv "${VENV_ARGS[@]}" "$VENV" || die "could not create the venv $VENV with $PY (on Debian/Ubuntu: apt install python3-venv)"
fi
VPY="$VENV/bin/python"

# pip sees the bundle alone: no index, no configuration files (they may add indexes, find-links, constraints), no cache.
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_REQUIREMENT
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
LOG="$VENV/sam2med-install.log"
pip_install() {
  "$VPY" -m pip install --no-index --find-links "$BUNDLE/wheels" "$@" >>"$LOG" 2>&1 && return 0
  local why
  why=$(grep -E '^ERROR:' "$LOG" | grep -v 'Ignored the following' | head -1 | sed 's/^ERROR: //')
  die "pip could not install from the bundle: ${why:-see $LOG} (full log: $LOG)"
}
: >"$LOG"
echo "installing the $(sed -nE 's/.*"profile": "(.*)".*/\1/p' "$BUNDLE/bundle.json") profile into $VENV (log: $LOG)"
pip_install -r "$BUNDLE/requirements.txt"
# sam2 without its declared dependencies: the rest are in requirements.txt, and torchvision is not needed.
pip_install --no-deps "$BUNDLE"/wheels/sam2-*.whl "$BUNDLE"/wheels/sam2med-*.whl
# (a bundle for the system's torch: what declares torch as a dependency, without its dependencies)
if [ -s "$BUNDLE/requirements-nodeps.txt" ]; then pip_install --no-deps -r "$BUNDLE/requirements-nodeps.txt"; fi
"$VPY" -c "import sam2med.engine" 2>>"$LOG" || die "sam2med does not import in $VENV (see $LOG)"

shopt -s nullglob
checkpoints=("$BUNDLE"/checkpoints/*.pt)
if [ ${#checkpoints[@]} -gt 0 ]; then
  CACHE=$("$VPY" -c "from sam2med.checkpoints import cache_dir; print(cache_dir())")
  mkdir -p "$CACHE"
  for f in "${checkpoints[@]}"; do [ -f "$CACHE/$(basename "$f")" ] || cp "$f" "$CACHE/"; done
  echo "checkpoints in $CACHE: $(cd "$BUNDLE/checkpoints" && ls -- *.pt | xargs)"
fi
echo "installed: $VENV/bin/sam2med --help"
