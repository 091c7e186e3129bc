"""Starting MONAI Label's server (its own `start_server` path) with the sam2med app and server app."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from sam2med.monailabel.appconfig import MAX_UPLOAD_ENV

logger = logging.getLogger(__name__)

UVICORN_APP = "sam2med.monailabel.server:app"


def start_server(app_dir: Path, studies: str, host: str, port: int, conf: Iterable[tuple[str, str]],
                 max_upload_mb: float) -> None:
    """Run `monailabel start_server` in this process until it stops (uvicorn serves `UVICORN_APP`)."""
    from monailabel.main import Main

    os.environ[MAX_UPLOAD_ENV] = f"{max_upload_mb:g}"  # read by the server app when uvicorn imports it
    argv = ["start_server", "--app", str(app_dir.resolve()), "--studies", studies,
            "--host", host, "--port", str(port), "--uvicorn_app", UVICORN_APP]
    for key, value in conf:
        argv += ["--conf", key, value]
    main = Main()
    main.action_start_server(main.args_parser().parse_args(argv))
