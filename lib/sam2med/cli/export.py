"""`main.py export`: a label on a DICOM series -> DICOM-SEG or RTSTRUCT, with coded segments; optionally stored to DICOMweb."""

from __future__ import annotations

import argparse
import logging

from sam2med.dicom.export import FORMATS, check_format, export_label
from sam2med.dicom.segment_map import read_segment_map
from sam2med.dicom.segments import Algorithm
from sam2med.io import check_file, check_output_path

logger = logging.getLogger(__name__)

HELP = "write a label on a DICOM series as DICOM-SEG or RTSTRUCT (coded segments), optionally to DICOMweb"
DESCRIPTION = """\
Write LABEL, a label map on the grid of the DICOM series in --reference, as a DICOM-SEG (--format seg) or
an RT Structure Set (--format rtstruct) referencing that series, to OUT.

Each label value becomes one segment (SEG) or one ROI (RTSTRUCT) numbered by the value, with its name,
display colour, coded meaning (SNOMED CT category and type) and the algorithm that made it. Names and codes
come from --labels; a TotalSegmentator structure name (liver, kidney_left, vertebrae_L1, ...) gets its SNOMED
CT codes and colour out of the box; a value without a name is "label N". RTSTRUCT contours are closed planar
polygons in patient coordinates, one per region and one per hole on each slice, read even-odd
(docs/clinical-export.md).

LABEL must lie on the series' grid: made on that series (e.g. 'propagate SERIES_FOLDER ...'), or the same
voxels stored with other axis order or flips (an LAS NIfTI of an LPS series). A label on another grid, a
series without ImagePositionPatient, or an empty label is refused with one error line, and nothing is written.

examples:
  python main.py export liver.nii.gz --reference ct_dicom/ --format seg -o liver_seg.dcm
  python main.py export organs.nii.gz --reference ct_dicom/ --format rtstruct -o organs_rt.dcm \\
      --labels labels.json:total
  python main.py export organs.nii.gz --reference ct_dicom/ --format rtstruct -o organs_rt.dcm \\
      --labels codes.csv --dicomweb http://127.0.0.1:8042/dicom-web

--labels files (docs/clinical-export.md):
  JSON  {"liver": 5} or {"5": "liver"}: names (codes looked up by TotalSegmentator name);
        {"liver": {"value": 5, "type": "10200004", "category": "123037004", "scheme": "SCT"}}: coded;
        FILE:KEY picks one map of a file of maps (labels.json:total).
  CSV   a header with value and name columns (value/label/LabelID, name/Structure) and codes as dcmqi
        columns (SegmentedPropertyTypeCodeSequence.CodeValue, ...) or short ones (type, category,
        modifier as SCHEME:VALUE:MEANING); colour in color or DicomRGBColor.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("label", help="label map (NIfTI, NRRD, MetaImage) on the reference series' grid")
    parser.add_argument("--reference", required=True, metavar="DICOM_DIR",
                        help="folder of the DICOM series the label was made on (one file per slice)")
    parser.add_argument("--format", required=True, metavar="|".join(FORMATS),
                        help="seg: DICOM Segmentation (binary, one segment per label value); rtstruct: RT Structure Set "
                             "(one ROI per label value, contours per slice), what radiotherapy planning systems read")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output DICOM file (e.g. out.dcm)")
    parser.add_argument("--labels", metavar="MAP.json[:KEY]|MAP.csv", default=None,
                        help="names, colours and codes of the label values (see above); default: 'label N' with generic codes")
    parser.add_argument("--dicomweb", metavar="URL", default=None,
                        help="also store the result on this DICOMweb server (STOW-RS), e.g. http://127.0.0.1:8042/dicom-web; "
                             "the series should be there already (python -m sam2med.dicom.upload gives it the same "
                             "identifiers this export references)")
    parser.add_argument("--algorithm", metavar="NAME", default="sam2med",
                        help="algorithm name recorded per segment/ROI")
    parser.add_argument("--algorithm-version", metavar="TEXT", default="",
                        help="its version, e.g. the model and checkpoint hash ('sam2.1_hiera_tiny sha256:0123abcd'); "
                             "default: none recorded ('unknown')")
    parser.add_argument("--algorithm-type", default="SEMIAUTOMATIC", choices=["SEMIAUTOMATIC", "AUTOMATIC", "MANUAL"],
                        help="DICOM segment algorithm type: SEMIAUTOMATIC for a propagated or corrected label")
    parser.add_argument("--series-description", metavar="TEXT", default=None,
                        help="SeriesDescription of the new series (default: 'sam2med' for SEG, 'sam2med RTSTRUCT')")


def run(args: argparse.Namespace) -> int:
    kind = check_format(args.format)  # before any work: options first, then the inputs
    check_output_path(args.output, suffixes=None)
    algorithm = Algorithm(args.algorithm, args.algorithm_version, args.algorithm_type)
    segments = read_segment_map(args.labels) if args.labels else {}
    names = {value: segment.name for value, segment in segments.items()}
    check_file(args.label, "label")
    result = export_label(args.label, args.reference, kind, args.output, names=names, segments=segments, algorithm=algorithm,
                          series_description=args.series_description)
    what, item = ("DICOM-SEG", "segment") if kind == "seg" else ("RTSTRUCT", "ROI")
    shown = ", ".join(names.get(v) or f"label {v}" for v in result.values[:8]) + (", ..." if len(result.values) > 8 else "")
    print(f"{result.path}: {what} with {len(result.values)} {item}(s) ({shown}) referencing series {_referenced_series(result.dataset)}")
    if args.dicomweb:
        from sam2med.dicom.upload import store_datasets

        store_datasets([result.dataset], args.dicomweb)
        print(f"stored on {args.dicomweb}: study {result.dataset.StudyInstanceUID}, series {result.dataset.SeriesInstanceUID}, "
              f"instance {result.dataset.SOPInstanceUID}")
    return 0


def _referenced_series(dataset) -> str:
    if "ReferencedSeriesSequence" in dataset:  # DICOM-SEG
        return str(dataset.ReferencedSeriesSequence[0].SeriesInstanceUID)
    study = dataset.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    return str(study.RTReferencedSeriesSequence[0].SeriesInstanceUID)
