#!/usr/bin/env bash
# Stop the Orthanc started by start.sh (the one whose pid file is in DIR).
# Usage: bash scripts/orthanc/stop.sh [--data DIR]
set -euo pipefail
DATA=${SAM2MED_ORTHANC_DIR:-$HOME/.cache/sam2med/orthanc}
[ "${1:-}" = "--data" ] && DATA=$2
PIDFILE="$DATA/orthanc.pid"
if [ ! -f "$PIDFILE" ]; then
  echo "no Orthanc pid file in $DATA: nothing to stop"
  exit 0
fi
PID=$(cat "$PIDFILE")
if kill -0 "$PID" 2>/dev/null; then
  kill "$PID"
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$PID" 2>/dev/null; then kill -9 "$PID"; fi
  echo "Orthanc (pid $PID) stopped"
else
  echo "Orthanc (pid $PID) was not running"
fi
rm -f "$PIDFILE"
