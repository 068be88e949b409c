"""Reading CT series: DICOM and NIfTI (and writing NIfTI); organ masks."""

from ctvoco.io.decoders import sign_extend
from ctvoco.io.dicom import read_dicom_series, series_files
from ctvoco.io.masks import MASK_LABELS, OrganMask, align_mask, read_mask
from ctvoco.io.nifti import nifti_case_id, read_nifti, write_nifti
from ctvoco.io.volume import CTVolume, canonical_transform, to_canonical

__all__ = [
    "MASK_LABELS",
    "CTVolume",
    "OrganMask",
    "align_mask",
    "canonical_transform",
    "nifti_case_id",
    "read_dicom_series",
    "read_mask",
    "read_nifti",
    "series_files",
    "sign_extend",
    "to_canonical",
    "write_nifti",
]
