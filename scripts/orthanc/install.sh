#!/usr/bin/env bash
# Install what the OHIF + Orthanc stack needs, only when missing: Debian's orthanc and orthanc-dicomweb,
# Debian's chromium (for the end-to-end test), and the playwright Python package into .venv.
# Never starts the system-wide Orthanc service: the repo's start.sh runs its own on loopback.
# Usage: bash scripts/orthanc/install.sh [--no-browser]
set -euo pipefail
cd "$(dirname "$0")/../.."
WANT_BROWSER=1
[ "${1:-}" = "--no-browser" ] && WANT_BROWSER=0

PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
packages=()
command -v Orthanc >/dev/null 2>&1 || packages+=(orthanc)
command -v curl >/dev/null 2>&1 || packages+=(curl)
[ -e "$PLUGIN" ] || packages+=(orthanc-dicomweb)
if [ "$WANT_BROWSER" = 1 ] && [ ! -x /usr/bin/chromium ]; then packages+=(chromium); fi

if [ ${#packages[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: installing ${packages[*]} needs root (or sudo)" >&2; exit 1; }
    SUDO="sudo -n"
  fi
  echo "installing Debian packages: ${packages[*]}"
  # Keep the package's service from starting system-wide: a policy-rc.d that denies every start,
  # only for this install, and only when the machine has none of its own.
  POLICY=/usr/sbin/policy-rc.d
  ADDED_POLICY=0
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    ADDED_POLICY=1
  fi
  trap '[ "$ADDED_POLICY" = 1 ] && $SUDO rm -f "$POLICY"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" </dev/null; then
    $SUDO apt-get update -q </dev/null
    $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" </dev/null
  fi
  # Stop a system-wide Orthanc that the package may have started anyway (it would hold port 8042).
  if command -v service >/dev/null 2>&1; then $SUDO service orthanc stop >/dev/null 2>&1 || true; fi
fi
command -v Orthanc >/dev/null 2>&1 || { echo "error: Orthanc is still missing after install" >&2; exit 1; }
for plugin in "$PLUGIN"; do
  [ -e "$plugin" ] || { echo "error: $plugin is still missing after install" >&2; exit 1; }
done

if [ "$WANT_BROWSER" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
    echo "installing playwright (Python package only; the browser is Debian's /usr/bin/chromium)"
    "$PY" -m pip install -q "$(grep -E '^playwright==' requirements.txt)"
  fi
fi
echo "ok: Orthanc $(Orthanc --version 2>/dev/null | head -1 | awk '{print $NF}') with its DICOMweb plugin$([ "$WANT_BROWSER" = 1 ] && echo ", chromium + playwright")"
