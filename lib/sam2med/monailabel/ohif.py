"""The sam2med OHIF extension and mode, served next to the OHIF that MONAI Label bundles.

MONAI Label 0.8.5 ships a prebuilt OHIF (`BUNDLED_OHIF_VERSION`). That build imports extensions and modes
named by URL in `window.config` at run time, so this module serves:

- `/ohif/app-config.js`: the bundled config with the sam2med extension and mode appended;
- `/ohif/sam2med/<file>.js`: the plain ES modules in `apps/sam2med/ohif/` (no build step);
- `/sam2med/grid?image=ID`: the image's voxel grid, so the panel maps OHIF's slices to server slices by
  patient position rather than by list order;
- `POST /sam2med/progress`: a new unguessable progress id for one infer request (progress.py);
  `/sam2med/progress/{id}`: how far that propagation is (encode / track, done / total); with `?since=N`
  also the slices it finished from sequence number N on (progress.ProgressBoard.get).
- `/ohif/{path}`: the bundled OHIF's files, never outside its folder (MONAI Label's version answers 500 for `..`).

`routes.install_routes` puts them before MONAI Label's `/ohif/{path}` catch-all; everything else of the bundled OHIF is served
as shipped. The extension reaches into the bundle's internals (React through webpack's chunk loader), so
`check_bundled_ohif` refuses to serve it over another OHIF build.
"""

from __future__ import annotations

import mimetypes
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import monailabel
from fastapi import HTTPException
from fastapi.responses import FileResponse, Response
from monailabel.interfaces.utils.app import app_instance

from sam2med.monailabel.auth import user_role
from sam2med.io import load_volume
from sam2med.monailabel.http import call
from sam2med.monailabel.results import image_grid
from sam2med.monailabel.progress import PROGRESS
from sam2med.monailabel.safety import NotFoundError, check_image_id

BUNDLED_OHIF_VERSION = "3.10.0-beta.5"
OHIF_DIR = Path(monailabel.__file__).resolve().parent / "endpoints" / "static" / "ohif"
# The modules in the checkout's apps/sam2med/ohif/, or where the wheel installs the app (share/sam2med/apps/sam2med).
EXTENSION_DIR = next((p for p in (Path(__file__).resolve().parents[3] / "apps" / "sam2med" / "ohif",
                                  Path(sys.prefix) / "share" / "sam2med" / "apps" / "sam2med" / "ohif") if p.is_dir()),
                     Path(__file__).resolve().parents[3] / "apps" / "sam2med" / "ohif")
EXTENSION_URL = "/ohif/sam2med/sam2med-extension.js"
MODE_URL = "/ohif/sam2med/sam2med-mode.js"
_MODULE_NAME = re.compile(r"^[a-z0-9-]{1,64}\.js$")
_MAX_PATH_CHARS = 1024


def bundled_ohif_version(ohif_dir: Path = OHIF_DIR) -> str:
    """The version string compiled into the bundled OHIF app bundle ('' when none is found)."""
    for bundle in sorted(ohif_dir.glob("app.bundle.*.js")):
        found = re.search(r'"(3\.\d+\.\d+(?:-beta\.\d+)?)"', bundle.read_text(errors="replace"))
        if found:
            return found.group(1)
    return ""


def check_bundled_ohif(ohif_dir: Path = OHIF_DIR) -> None:
    """Raise when the bundled OHIF is not the build the sam2med extension was written and tested against."""
    version = bundled_ohif_version(ohif_dir)
    if version != BUNDLED_OHIF_VERSION:
        raise RuntimeError(
            f"MONAI Label bundles OHIF {version or '(unknown)'}, the sam2med OHIF extension was written for "
            f"{BUNDLED_OHIF_VERSION}: re-check in apps/sam2med/ohif/ the webpack chunk access to React, the "
            "segmentation state layout (representationData.Labelmap.imageIds), the 'storeSegmentation' command "
            "and the Segmentation mode's modeFactory, then update BUNDLED_OHIF_VERSION")


def app_config_js(ohif_dir: Path = OHIF_DIR) -> str:
    """The bundled app-config.js with the sam2med extension and mode added to `window.config`."""
    bundled = (ohif_dir / "app-config.js").read_text()
    return (f"{bundled}\n// added by sam2med: the SAM2 propagation panel and mode\n"
            f"window.config.extensions = [...(window.config.extensions || []), '{EXTENSION_URL}'];\n"
            f"window.config.modes = [...(window.config.modes || []), '{MODE_URL}'];\n")




def image_grid_json(image_id: str) -> dict[str, Any]:
    """The grid of a datastore image as JSON: shape (x, y, z), spacing, origin and direction (row-major 3x3)."""
    check_image_id(image_id)
    datastore = app_instance().datastore()
    uri = datastore.get_image_uri(image_id)
    if not uri or not os.path.exists(uri):
        raise NotFoundError(f"image {image_id!r} is not in the datastore")
    grid = load_volume(uri).grid if os.path.isdir(uri) else image_grid(uri)
    return {"image": image_id, "shape": list(grid.shape), "spacing": list(grid.spacing), "origin": list(grid.origin),
            "direction": list(grid.direction)}


def _app_config() -> Response:
    return Response(app_config_js(), media_type="application/javascript", headers={"Cache-Control": "no-cache"})


def _extension_module(name: str) -> FileResponse:
    path = EXTENSION_DIR / name
    if not _MODULE_NAME.match(name) or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no sam2med OHIF module named {name!r}")
    return FileResponse(path, media_type="application/javascript", headers={"Cache-Control": "no-cache"})


def bundled_file(path: str, ohif_dir: Path = OHIF_DIR) -> Path:
    """The bundled OHIF file a `/ohif/{path}` request names; index.html for an app route (OHIF routes in the
    browser); 404 for a path that leaves the OHIF folder, is too long or names a folder."""
    if len(path) > _MAX_PATH_CHARS or "\x00" in path:
        raise HTTPException(status_code=404, detail="no such OHIF file")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HTTPException(status_code=404, detail="no such OHIF file ('..' is not served)")
    candidate = ohif_dir.joinpath(*parts) if parts else ohif_dir / "index.html"
    try:
        if candidate.resolve().is_relative_to(ohif_dir.resolve()) and candidate.is_file():
            return candidate
        if candidate.exists():  # a folder of the bundle
            raise HTTPException(status_code=404, detail="no such OHIF file")
    except OSError:  # a name too long for the file system
        raise HTTPException(status_code=404, detail="no such OHIF file") from None
    return ohif_dir / "index.html"


def _ohif_file(path: str, user: Any = user_role()) -> FileResponse:
    file = bundled_file(path)
    return FileResponse(file, media_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream")


def _grid(image: str = "", user: Any = user_role()) -> dict[str, Any]:
    return call(image_grid_json, image)


def _progress(progress_id: str, since: int | None = None, user: Any = user_role()) -> dict[str, Any]:
    entry = call(PROGRESS.get, progress_id, since)
    if entry is None:
        raise HTTPException(status_code=404, detail="no propagation with this progress_id is known")
    return entry


def _new_progress(user: Any = user_role()) -> dict[str, str]:
    return {"progress_id": PROGRESS.issue()}


def ohif_routes() -> list[tuple[str, str, Callable[..., Any], str]]:
    """The OHIF extension's routes, as (method, path, endpoint, summary), for `routes.install_routes` to put in
    front of MONAI Label's `/ohif/{path}` catch-all; refused over another bundled OHIF build."""
    check_bundled_ohif()
    return [  # installed in front one by one: the catch-all first, so that it ends up behind the others
        ("GET", "/ohif/{path:path}", _ohif_file, "A file of the bundled OHIF (index.html for OHIF's own routes)"),
        ("GET", "/ohif/app-config.js", _app_config, "OHIF config: the bundled one plus the sam2med extension and mode"),
        ("GET", "/ohif/sam2med/{name}", _extension_module, "A module of the sam2med OHIF extension"),
        ("GET", "/sam2med/grid", _grid, "Voxel grid of an image"),
        ("GET", "/sam2med/progress/{progress_id}", _progress, "Progress of a running propagation"),
        ("POST", "/sam2med/progress", _new_progress, "A new progress id, for one infer request"),
    ]
