"""DICOM support beyond reading series: identifier repair, DICOM-SEG, and a DICOMweb datastore for MONAI Label."""
