"""Reading (and, for synthetic data, writing) CT series: DICOM and NIfTI."""

from ctvoco.io.dicom import read_dicom_series, series_files, sign_extend
from ctvoco.io.dicom_writer import SeriesTags, new_uid, write_dicom_series
from ctvoco.io.nifti import nifti_case_id, read_nifti, write_nifti
from ctvoco.io.volume import CTVolume, canonical_transform, to_canonical

__all__ = [
    "CTVolume",
    "SeriesTags",
    "canonical_transform",
    "new_uid",
    "nifti_case_id",
    "read_dicom_series",
    "read_nifti",
    "series_files",
    "sign_extend",
    "to_canonical",
    "write_dicom_series",
    "write_nifti",
]
