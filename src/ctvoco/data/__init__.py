"""Data sets on top of the volume cache: RSNA and FLARE layouts, labels, folds, DataModules."""

from ctvoco.data.datamodules import (
    CachedVolumeDataModule,
    ConcatDataModule,
    FLAREDataModule,
    RSNADataModule,
)
from ctvoco.data.dataset import CachedVolumeDataset, VolumeView, WholeVolume
from ctvoco.data.flare import flare_cases
from ctvoco.data.folds import load_or_make_folds, make_folds
from ctvoco.data.loading import VolumeDataModule
from ctvoco.data.rsna import read_rsna_labels, read_series_meta, rsna_series
from ctvoco.data.sampling import SeededSampler, sample_seed
from ctvoco.data.segmentation import MaskedSlices, OrganSegmentationDataModule

__all__ = [
    "CachedVolumeDataModule",
    "CachedVolumeDataset",
    "ConcatDataModule",
    "FLAREDataModule",
    "MaskedSlices",
    "OrganSegmentationDataModule",
    "RSNADataModule",
    "SeededSampler",
    "VolumeDataModule",
    "VolumeView",
    "WholeVolume",
    "flare_cases",
    "load_or_make_folds",
    "make_folds",
    "read_rsna_labels",
    "read_series_meta",
    "rsna_series",
    "sample_seed",
]
