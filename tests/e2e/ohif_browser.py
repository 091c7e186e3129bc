"""Helpers of the browser tests: paths, Chromium flags, free ports, waiting for servers."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _wait_for(url: str, seconds: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            pytest.fail(f"process exited with {process.returncode} before {url} answered:\n{tail}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds:.0f}s")


def open_viewer(page, server: str, study: str, series: str | None = None, mode: str = "sam2med", settle_s: float = 3):
    """Open `study` (optionally one series) in an OHIF mode; returns the first viewport once shown, notice closed."""
    from playwright.sync_api import expect

    page.goto(f"{server}/ohif/{mode}?StudyInstanceUIDs={study}" + (f"&SeriesInstanceUIDs={series}" if series else ""))
    viewport = page.locator(".cornerstone-viewport-element").first
    expect(viewport).to_be_visible(timeout=120_000)
    time.sleep(settle_s)
    hide = page.get_by_text("Confirm and Hide")
    if hide.is_visible():
        hide.click()
    return viewport


SHOWN_Z = """() => { const v = window.sam2med.activeViewport().viewport;
    return window.cornerstone.metaData.get('imagePlaneModule', v.getImageIds()[v.getCurrentImageIdIndex()]).imagePositionPatient[2]; }"""


def scroll_to_z(page, viewport, z: float) -> None:
    """Scroll with the mouse wheel until the image at patient z is shown. Which way a wheel step moves depends on
    the viewport (a stack steps through its list, a volume along the camera), so the direction is learnt."""
    box = viewport.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    delta = 100
    for _ in range(60):
        before = page.evaluate(SHOWN_Z)
        if abs(before - z) < 0.01:
            return
        page.mouse.wheel(0, delta)
        time.sleep(0.3)
        if abs(page.evaluate(SHOWN_Z) - z) > abs(before - z):
            delta = -delta
    pytest.fail(f"could not scroll to z={z}")


def stroke(page, viewport, points: list[tuple[float, float]]) -> None:
    """A brush/eraser stroke with the mouse through points given as fractions of the viewport box."""
    box = viewport.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()
    time.sleep(0.4)


def run_panel(page) -> dict:
    """Press the sam2med panel's Run and wait for the painted result; fails on the panel's error line."""
    import re

    from playwright.sync_api import expect

    page.locator('[data-testid="sam2med-run"]').click()
    done = page.locator('[data-testid="sam2med-status"]', has_text="result painted into the segmentation")
    failed = page.locator('[data-testid="sam2med-error"]', has_text=re.compile("."))
    expect(done.or_(failed)).to_be_visible(timeout=300_000)
    assert not failed.is_visible(), f"the panel shows an error: {failed.inner_text()}"
    return page.evaluate("() => window.sam2med.lastResult")
