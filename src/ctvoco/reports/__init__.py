"""Reports of evaluations: plots, fold evaluation files, cross-validation summaries."""

from ctvoco.reports.cross_validation import cross_validation_report, find_oof_files
from ctvoco.reports.plots import plot_calibration, plot_confusion, plot_roc

__all__ = [
    "cross_validation_report",
    "find_oof_files",
    "plot_calibration",
    "plot_confusion",
    "plot_roc",
]
