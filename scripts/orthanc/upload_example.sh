#!/usr/bin/env bash
# Upload a DICOM series (default: the example CT series in ../shared/data) to the DICOMweb server,
# giving it consistent generated UIDs and the CT SOP Class where the files have them blank.
# Usage: bash scripts/orthanc/upload_example.sh [FOLDER] [--url http://127.0.0.1:8042/dicom-web]
set -euo pipefail
cd "$(dirname "$0")/../.."
FOLDER=${SAM2MED_SHARED_DATA:-../shared/data}/totalsegmentator/example_ct_dicom
URL=http://127.0.0.1:8042/dicom-web
while [ $# -gt 0 ]; do
  case "$1" in
    --url) URL=$2; shift 2 ;;
    -h|--help) sed -n 2,4p "$0"; exit 0 ;;
    *) FOLDER=$1; shift ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
PYTHONPATH=lib${PYTHONPATH:+:$PYTHONPATH} exec "$PY" -m sam2med.dicom.upload "$FOLDER" --url "$URL"
