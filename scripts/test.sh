#!/usr/bin/env bash
# The test suite (README's test command; .ci/run calls it). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "error: .venv is missing: run 'bash scripts/setup.sh' first" >&2
  exit 2
fi
# The two heavy offline-install tests (tests/bundle, ~4 min together) run with SAM2MED_HEAVY_TESTS=1.
if [ "${SAM2MED_HEAVY_TESTS:-0}" = 1 ]; then
  .venv/bin/python -m pytest "$@"
else
  .venv/bin/python -m pytest -m "not heavy" "$@"
fi
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5): the suite is missing or every test was deselected" >&2
  exit 1
fi
exit "$rc"
