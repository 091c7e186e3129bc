#!/usr/bin/env python3
"""sam2med command line: propagate, one-prompt, serve, evaluate, bench, download, samples (see --help)."""

import sys
from pathlib import Path

try:
    import sam2med  # noqa: F401  (installed by scripts/setup.sh)
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

from sam2med.cli import main

if __name__ == "__main__":
    sys.exit(main())
