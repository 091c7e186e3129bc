"""MONAI Label app for sam2med: SAM2.1 seed-mask and click propagation for OHIF, 3D Slicer and the REST API.

Start it with `python main.py serve` (repository root) or
`monailabel start_server --app apps/sam2med --studies DIR --conf checkpoint PATH --conf model tiny`.
Tasks and strategies are listed in app.json; `--conf` keys are described in docs/server.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict

try:
    import sam2med  # noqa: F401  (installed by scripts/setup.sh)
except ImportError:  # a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore

from sam2med.monailabel.service import AppServices, is_url

logger = logging.getLogger(__name__)


class Sam2MedApp(MONAILabelApp):
    """Registers the tasks and strategies named in app.json over one shared SAM2.1 propagator."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.services = AppServices(app_dir, studies, conf)
        description = self.services.description
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name=description["name"],
                         description=description["description"], version=description["version"])
        # no scoring job per /activelearning/ call, train or start: `uncertain` re-scores what a new model made stale
        self._auto_update_scoring = False

    def init_datastore(self) -> Datastore:
        if is_url(self.studies):  # DICOMweb (or another remote store): MONAI Label's own handling
            return super().init_datastore()
        logger.info("local datastore: %s", self.studies)
        return self.services.local_datastore(self.studies)

    def init_remote_datastore(self) -> Datastore:
        # DICOMweb through sam2med: no dcmqi download at start (it fails offline), DICOM-SEG by pydicom-seg.
        from monailabel.config import settings

        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            return super().init_remote_datastore()
        from sam2med.monailabel.dicomweb import create_dicomweb_datastore, use_sam2med_dicom_seg

        use_sam2med_dicom_seg()
        return create_dicomweb_datastore(self.studies, self.services.config.labels)

    def init_infers(self):
        return self.services.infers(self.datastore)

    def init_strategies(self):
        return self.services.strategies()

    def init_trainers(self):
        return self.services.trainers()

    def init_scoring_methods(self):
        return self.services.scoring_methods()

    def info(self) -> Dict[str, Any]:
        return {**super().info(), "sam2med": self.services.info()}

    def infer(self, request, datastore=None):
        # A result is stored (DICOM-SEG on a DICOMweb server) only when the request asks: OHIF's Save stores what
        # the annotator accepted; storing every Run filled studies with series nobody chose to keep.
        request = {**request, "save_label": self.services.wants_saved_result(request)}
        sessions = self.sessions()
        with self.services.infer_guard(request, datastore or self.datastore(), sessions.store_path if sessions else None) as guarded:
            return self.services.kept(guarded, super().infer(guarded.request, guarded.datastore))  # MONAI Label runs the task

    def next_sample(self, request):
        self.services.check_strategy(request, self._strategies)
        result = super().next_sample(request)
        self.services.after_next_sample(result)
        return result

    def on_init_complete(self):
        super().on_init_complete()
        self.services.on_start()
