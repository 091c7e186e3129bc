"""Start the real server (`main.py serve`) on a free loopback port for a test module, and stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

REPO = Path(__file__).resolve().parents[2]


def http_error(err: Exception) -> tuple[int, str]:
    """(status, body) of an HTTP error raised by MONAI Label's client."""
    match = re.search(r"Status: (\d+); Response: (.*)", str(getattr(err, "msg", err)), re.S)
    assert match, f"not an HTTP error: {err}"
    return int(match.group(1)), match.group(2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_server_args(studies: Path, checkpoint: Path, labels: str) -> list[str]:
    """`main.py serve` options of a test server: random-weight tiny at 256 px on the CPU, 1 GB feature cache."""
    return ["--studies", str(studies), "--checkpoint", str(checkpoint), "--device", "cpu", "--image-size", "256",
            "--labels", labels, "--cache-gb", "1"]


@contextmanager
def running_server(args: Sequence[str], log_path: Path, env: Mapping[str, str], timeout: float = 180,
                   ready_path: str = "/info/", process: dict | None = None) -> Iterator[str]:
    """`main.py serve ARGS --port <free>` with `env` over this environment; yields its URL once `ready_path`
    answers 200 (/info/; a server with auth on answers it only with a token). `process` gets the server's "pid"."""
    port = free_port()
    cmd = [sys.executable, str(REPO / "main.py"), "serve", *args, "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        if process is not None:
            process["pid"] = proc.pid
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}{ready_path}", timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"server did not answer {ready_path}: {log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
