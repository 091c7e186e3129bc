"""Upload a DICOM series folder to a DICOMweb server (STOW-RS), repairing blank identifiers first.

    python -m sam2med.dicom.upload FOLDER --url http://127.0.0.1:8042/dicom-web
"""

from __future__ import annotations

import argparse
import logging
import sys

import requests
from dicomweb_client.api import DICOMwebClient

from sam2med.dicom.series import decompress, read_series_files, repair_series
from sam2med.errors import Sam2MedError

logger = logging.getLogger(__name__)


def upload_series(folder: str, url: str, batch: int = 10, keep_compression: bool = False) -> dict[str, str]:
    """Repair (and, unless `keep_compression`, decompress) the series in `folder` and STOW it; returns its
    StudyInstanceUID, SeriesInstanceUID and file count."""
    files = read_series_files(folder)
    report = repair_series(files)
    if not keep_compression:
        decompressed = sum(decompress(item) for item in files)
        if decompressed:
            logger.info("decompressed %d of %d files (the server may not transcode them for viewers)", decompressed, len(files))
    datasets = [item.dataset for item in files]
    store_datasets(datasets, url, batch)
    first = datasets[0]
    logger.info("uploaded %d files of %s (%s)", len(datasets), folder, report)
    return {"StudyInstanceUID": str(first.StudyInstanceUID), "SeriesInstanceUID": str(first.SeriesInstanceUID),
            "files": str(len(datasets))}


def store_datasets(datasets: list, url: str, batch: int = 10) -> None:
    """STOW-RS `datasets` to the DICOMweb server at `url`; a server that cannot be reached or refuses is one `Sam2MedError`."""
    client = DICOMwebClient(url=url.rstrip("/"))
    try:
        for start in range(0, len(datasets), batch):
            client.store_instances(datasets[start : start + batch])
    except requests.ConnectionError:
        raise Sam2MedError(f"{url}: cannot connect; is the DICOMweb server running? (bash scripts/orthanc/start.sh)") from None
    except requests.HTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise Sam2MedError(f"{url}: the server refused the upload (HTTP {status})") from None
    except requests.RequestException as err:
        raise Sam2MedError(f"{url}: upload failed ({str(err).splitlines()[0][:160]})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2med.dicom.upload", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder holding one DICOM series")
    parser.add_argument("--url", default="http://127.0.0.1:8042/dicom-web", help="DICOMweb root of the server")
    parser.add_argument("--keep-compression", action="store_true",
                        help="upload compressed pixel data as is (default: decompress, as Debian's Orthanc cannot transcode)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = upload_series(args.folder, args.url, keep_compression=args.keep_compression)
    except Sam2MedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"study {result['StudyInstanceUID']} series {result['SeriesInstanceUID']}: {result['files']} files uploaded to {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
