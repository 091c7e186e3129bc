#!/usr/bin/env bash
# Start a private Orthanc with the DICOMweb plugin on loopback, from a config generated here.
# Usage: bash scripts/orthanc/start.sh [--data DIR] [--http-port N] [--dicom-port N]
#   DIR (default: $SAM2MED_ORTHANC_DIR or ~/.cache/sam2med/orthanc) holds the config, the database,
#   the log and the pid file. DICOMweb is then at http://127.0.0.1:PORT/dicom-web (default port 8042).
# Stop it with: bash scripts/orthanc/stop.sh [--data DIR]
set -euo pipefail
DATA=${SAM2MED_ORTHANC_DIR:-$HOME/.cache/sam2med/orthanc}
HTTP_PORT=8042
DICOM_PORT=4242
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --http-port) HTTP_PORT=$2; shift 2 ;;
    --dicom-port) DICOM_PORT=$2; shift 2 ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
command -v Orthanc >/dev/null 2>&1 || { echo "error: Orthanc is not installed; run: bash scripts/orthanc/install.sh" >&2; exit 1; }
for plugin in "$PLUGIN"; do
  [ -e "$plugin" ] || { echo "error: $plugin is missing; run: bash scripts/orthanc/install.sh" >&2; exit 1; }
done
mkdir -p "$DATA/db"
DATA=$(cd "$DATA" && pwd)
PIDFILE="$DATA/orthanc.pid"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "Orthanc already running (pid $(cat "$PIDFILE")) with data in $DATA"
  exit 0
fi
URL="http://127.0.0.1:$HTTP_PORT"
if curl -s -o /dev/null --max-time 2 "$URL/system"; then
  echo "error: something already answers on $URL; choose another --http-port" >&2
  exit 1
fi
cat > "$DATA/orthanc.json" <<JSON
{
  "Name": "sam2med",
  "StorageDirectory": "$DATA/db",
  "IndexDirectory": "$DATA/db",
  "HttpPort": $HTTP_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "SAM2MED",
  "DicomPort": $DICOM_PORT,
  "DicomAlwaysAllowStore": true,
  "HttpCompressionEnabled": false,
  "StableAge": 5,
  "SaveJobs": false,
  "Plugins": ["$PLUGIN"],
  "DicomWeb": {
    "Enable": true,
    "Root": "/dicom-web/",
    "EnableWado": true,
    "WadoRoot": "/wado",
    "Host": "127.0.0.1:$HTTP_PORT",
    "Ssl": false
  }
}
JSON
# setsid: Orthanc outlives this script and ignores the caller's terminal signals.
setsid Orthanc "$DATA/orthanc.json" >"$DATA/orthanc.log" 2>&1 </dev/null &
echo $! > "$PIDFILE"
for _ in $(seq 1 100); do
  if curl -sf -o /dev/null --max-time 2 "$URL/dicom-web/studies"; then
    echo "Orthanc running (pid $(cat "$PIDFILE")): DICOMweb at $URL/dicom-web, data in $DATA"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "error: Orthanc exited at start; last lines of $DATA/orthanc.log:" >&2
    tail -n 5 "$DATA/orthanc.log" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  sleep 0.2
done
echo "error: Orthanc did not answer on $URL within 20 s (log: $DATA/orthanc.log)" >&2
exit 1
