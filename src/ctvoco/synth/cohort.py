"""Synthetic cohorts written in the real file formats (RSNA DICOM tree, FLARE NIfTI tree).

``make_synthetic_cohort(root)`` writes::

    <root>/rsna/train_images/<patient_id>/<series_id>/<n>.dcm   RLE Lossless CT slices
    <root>/rsna/train.csv                                       one-hot labels per patient
    <root>/rsna/train_series_meta.csv                           patient_id, series_id, ...
    <root>/rsna/image_level_labels.csv                          images of bowel injury, bleeding
    <root>/rsna/segmentations/<series_id>.nii                   organ masks of some series
    <root>/rsna/test_images/...  and  test_labels.csv           held-out patients (optional)
    <root>/flare/imagesTr/FLARE23_XXXX_0000.nii.gz              int16 HU, varied affines
    <root>/cohort.json                                          the parameters it was made with

The FLARE volumes are stored along varying axis directions (:data:`FLARE_STORAGE`: LPS,
flipped, permuted; never plain RAS), with affines that place the body near 0 mm in-plane,
so reading them back exercises the reorientation of :func:`~ctvoco.io.read_nifti`. The
DICOM series use axial ``ImageOrientationPatient`` ``[1, 0, 0, 0, 1, 0]``, positions centred
on the scanner isocentre, and instance numbers (file names) shuffled. A share of the
training series (``segmented_fraction``) get an organ mask in RSNA's format
(:mod:`ctvoco.synth.annotations`).

Everything is deterministic for a seed, down to the bytes of every file (UIDs included);
calling it again with the same parameters reuses the existing cohort.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ctvoco.errors import UserError
from ctvoco.io.atomic import write_text_atomic
from ctvoco.io.nifti import write_nifti
from ctvoco.labels import LABEL_COLUMNS, TARGETS
from ctvoco.synth.anatomy import draw_anatomy
from ctvoco.synth.annotations import (
    image_level_rows,
    segmented,
    write_image_level_labels,
    write_segmentation,
)
from ctvoco.synth.dicom_writer import SeriesTags, new_uid, write_dicom_series
from ctvoco.synth.labels import (
    DEFAULT_PREVALENCE,
    INJURY_CODES,
    InjuryLabels,
    check_prevalence,
    draw_injury_labels,
)
from ctvoco.synth.phases import series_phases
from ctvoco.synth.placement import Vec3, first_voxel_lps, stored_origin
from ctvoco.synth.render import render_volume

FORMAT_VERSION = 4
FLARE_SPACING_JITTER = (0.25, 0.1)
"""Relative jitter of FLARE z and in-plane spacing between cases (anisotropic, varying)."""

FLARE_STORAGE: tuple[tuple[str, tuple[Vec3, Vec3, Vec3]], ...] = (
    ("LPS", ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))),
    ("RAI", ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))),
    ("LAS", ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))),
    ("PRI", ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0))),
    ("SAL", ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0))),
)
"""Storage of the FLARE cases, by case number in turn: ``(name, directions)``.

Row ``a`` of ``directions`` is the LPS direction in which stored voxel axis ``a`` grows;
the name gives the patient side each axis points to (``L``eft/``R``ight,
``P``osterior/``A``nterior, ``S``uperior/``I``nferior). None is the RAS+ of a plain
NIfTI affine: flips and permutations of the axes are all covered.
"""

FLARE_CENTRE_JITTER_MM = (10.0, 10.0, 50.0)
"""Range (+-, mm) of the patient position (LPS x, y, z) of a FLARE volume's centre."""


@dataclass(frozen=True)
class CohortSpec:
    """Parameters of a synthetic cohort (all of them change the files).

    Attributes:
        n_patients: Labelled RSNA-layout patients (``train_images``).
        n_test: Held-out RSNA-layout patients (``test_images`` + ``test_labels.csv``).
        n_flare: Unlabelled FLARE-layout volumes.
        seed: Master seed.
        shape: Volume shape ``(D, H, W)`` of each series.
        spacing: Voxel size ``(z, y, x)`` in mm (default: ``fov_mm / shape``).
        fov_mm: Field of view ``(z, y, x)`` in mm used when ``spacing`` is not given; the
            default covers the phantom from above the liver dome to the bladder.
        second_series_fraction: Share of patients with a second series (other z range).
        segmented_fraction: Share of training series with an organ mask in
            ``segmentations/`` (RSNA ships them for about 4 % of its series).
        prevalence: Class probabilities per target (default: the phantom's defaults).
    """

    n_patients: int = 16
    n_test: int = 0
    n_flare: int = 8
    seed: int = 0
    shape: tuple[int, int, int] = (64, 160, 160)
    spacing: tuple[float, float, float] | None = None
    fov_mm: tuple[float, float, float] = (400.0, 352.0, 352.0)
    second_series_fraction: float = 0.25
    segmented_fraction: float = 0.25
    prevalence: Mapping[str, Sequence[float]] | None = None

    def __post_init__(self) -> None:
        if self.prevalence is not None:
            try:
                check_prevalence(self.prevalence)
            except ValueError as exc:
                raise UserError(f"synthetic cohort prevalence: {exc}") from None

    @property
    def voxel_spacing(self) -> tuple[float, float, float]:
        """``spacing``, or the field of view divided by the shape."""
        if self.spacing is not None:
            return tuple(float(s) for s in self.spacing)  # type: ignore[return-value]
        return tuple(round(f / n, 4) for f, n in zip(self.fov_mm, self.shape, strict=True))  # type: ignore[return-value]

    def as_json(self) -> dict[str, Any]:
        """Plain values (stored in ``cohort.json``)."""
        values = asdict(self)
        values["shape"] = list(self.shape)
        values["spacing"] = list(self.voxel_spacing)
        values["fov_mm"] = list(self.fov_mm)
        values["prevalence"] = (
            {k: list(v) for k, v in self.prevalence.items()} if self.prevalence else None
        )
        values["format_version"] = FORMAT_VERSION
        return values


@dataclass
class SyntheticCohort:
    """Where a written cohort lives and what it holds."""

    root: Path
    spec: CohortSpec
    labels: pd.DataFrame
    test_labels: pd.DataFrame
    series: pd.DataFrame
    flare_cases: list[str] = field(default_factory=list)

    @property
    def rsna_root(self) -> Path:
        """The RSNA-layout tree (``data.root`` for ``data=rsna``)."""
        return self.root / "rsna"

    @property
    def flare_root(self) -> Path:
        """The FLARE-layout tree (``data.root`` for ``data=flare``)."""
        return self.root / "flare"


def make_synthetic_cohort(
    root: str | os.PathLike[str],
    *,
    progress: bool = True,
    console: Console | None = None,
    **spec: Any,
) -> SyntheticCohort:
    """Write (or reuse) a synthetic cohort under ``root``; see the module docstring.

    Args:
        root: Output folder.
        progress: Show a progress bar.
        console: Where progress goes (default stderr).
        **spec: Fields of :class:`CohortSpec` (``n_patients``, ``n_flare``, ``seed``, ...).

    Returns:
        The cohort's paths, labels and series table.
    """
    cohort_spec = CohortSpec(**spec)
    root = Path(root)
    marker = root / "cohort.json"
    if marker.exists():
        existing = json.loads(marker.read_text())
        if existing == cohort_spec.as_json():
            return _load(root, cohort_spec)
        raise UserError(
            f"{root} holds a synthetic cohort made with other parameters "
            f"({parameter_differences(existing, cohort_spec.as_json())}); choose another "
            "folder, or the parameters it was made with"
        )
    root.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    rng = np.random.default_rng(cohort_spec.seed)
    prevalence = cohort_spec.prevalence or DEFAULT_PREVALENCE
    total = cohort_spec.n_patients + cohort_spec.n_test + cohort_spec.n_flare
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]synthetic cohort"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    ) as bar:
        task = bar.add_task("cohort", total=total)
        rows, series_rows, image_rows = _write_rsna_patients(
            root / "rsna", cohort_spec, rng, prevalence, lambda: bar.advance(task)
        )
        for i in range(cohort_spec.n_flare):
            _write_flare_case(root / "flare", i + 1, cohort_spec, rng, prevalence)
            bar.advance(task)
    frame = pd.DataFrame(rows)
    _write_tables(root / "rsna", frame, pd.DataFrame(series_rows))
    write_image_level_labels(root / "rsna", frame, image_rows)
    write_text_atomic(marker, json.dumps(cohort_spec.as_json(), indent=2, sort_keys=True))
    if progress:
        # The path is printed as it is: brackets in it are not markup.
        console.print(
            f"synthetic cohort: {cohort_spec.n_patients} train + {cohort_spec.n_test} test patients "
            f"({len(series_rows)} series), {cohort_spec.n_flare} FLARE volumes in {root} "
            f"({time.perf_counter() - start:.1f} s)",
            markup=False,
            highlight=False,
        )
    return _load(root, cohort_spec)


def _write_rsna_patients(
    rsna: Path,
    spec: CohortSpec,
    rng: np.random.Generator,
    prevalence: Mapping[str, Sequence[float]],
    advance: Callable[[], None],
) -> tuple[list[dict], list[dict], list[dict]]:
    """Write every train and test patient of the RSNA tree, calling ``advance`` after each.

    Returns:
        ``(label rows, series rows, image-level label rows of train patients)``.
    """
    patient_ids = _unique_ids(rng, spec.n_patients + spec.n_test, 10000, 65535)
    rows, series_rows, image_rows = [], [], []
    for i, patient_id in enumerate(patient_ids):
        split = "train" if i < spec.n_patients else "test"
        labels = draw_injury_labels(rng, prevalence)
        written, labels, shown = _write_patient(rsna, split, int(patient_id), labels, spec, rng)
        series_rows += written
        image_rows += shown if split == "train" else []
        rows.append({"patient_id": int(patient_id), "split": split, **labels.to_row()})
        advance()
    return rows, series_rows, image_rows


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    return np.sort(rng.choice(np.arange(low, high), size=n, replace=False))


def _write_patient(
    rsna_root: Path,
    split: str,
    patient_id: int,
    labels: InjuryLabels,
    spec: CohortSpec,
    rng: np.random.Generator,
) -> tuple[list[dict[str, Any]], InjuryLabels, list[dict[str, Any]]]:
    """Write the patient's series; return their rows, the labels of what is visible and the
    image-level label rows (:func:`image_level_rows`).

    An injury whose lesion falls outside the field of view of every series is not in the
    images, so its label is set back to healthy (labels always describe the images).
    """
    anatomy = draw_anatomy(rng)
    visible: set[int] = set()
    phases = series_phases(2 if rng.random() < spec.second_series_fraction else 1, rng)
    study_uid = new_uid(f"study/{spec.seed}/{patient_id}")
    rows: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []
    for s, phase in enumerate(phases):
        series_id = int(rng.integers(1000, 65535))
        z_offset = 0.0 if s == 0 else float(rng.uniform(-3.0, 3.0) * spec.voxel_spacing[0])
        phantom = render_volume(
            anatomy.in_phase(phase),
            labels,
            shape=spec.shape,
            spacing=spec.voxel_spacing,
            rng=rng,
            z_offset_mm=z_offset,
        )
        folder = rsna_root / f"{split}_images" / str(patient_id) / str(series_id)
        tags = SeriesTags(
            patient_id=str(patient_id),
            series_uid=new_uid(f"series/{spec.seed}/{patient_id}/{series_id}"),
            study_uid=study_uid,
            series_number=s + 1,
        )
        corner = first_voxel_lps(spec.shape, spec.voxel_spacing, z_offset)
        paths = write_dicom_series(
            phantom.hu, folder, spec.voxel_spacing, tags, origin=corner, shuffle_names=rng
        )
        storage = segmented(spec.seed, patient_id, series_id, spec.segmented_fraction)
        if split == "train" and storage is not None:
            write_segmentation(
                rsna_root, series_id, phantom.organs, spec.voxel_spacing, corner, storage
            )
        shown += image_level_rows(
            patient_id, series_id, phantom.injuries, [int(p.stem) for p in paths]
        )
        visible.update(int(c) for c in np.unique(phantom.injuries) if c)
        aortic = phantom.hu[phantom.organs == 3]
        rows.append(
            {
                "patient_id": patient_id,
                "series_id": series_id,
                "split": split,
                "aortic_hu": float(np.median(aortic)) if aortic.size else float("nan"),
                "incomplete_organ": 0,
            }
        )
    classes = [
        c if INJURY_CODES[t] in visible else 0
        for t, c in zip(TARGETS, labels.as_classes(), strict=True)
    ]
    return rows, InjuryLabels(*classes), shown


def _write_flare_case(
    flare_root: Path,
    index: int,
    spec: CohortSpec,
    rng: np.random.Generator,
    prevalence: Mapping[str, Sequence[float]],
) -> str:
    anatomy = draw_anatomy(rng).in_phase(series_phases(1, rng)[0])
    labels = draw_injury_labels(rng, prevalence)
    z_jit, xy_jit = FLARE_SPACING_JITTER
    in_plane = spec.voxel_spacing[1] * float(rng.uniform(1 - xy_jit, 1 + xy_jit))
    spacing = (spec.voxel_spacing[0] * float(rng.uniform(1 - z_jit, 1 + z_jit)), in_plane, in_plane)
    phantom = render_volume(anatomy, labels, shape=spec.shape, spacing=spacing, rng=rng)
    centre = tuple(float(rng.uniform(-j, j)) for j in FLARE_CENTRE_JITTER_MM)
    # The phantom's own frame has the top of the field of view at z = 0; move its centre.
    shift = (centre[0], centre[1], centre[2] + spec.shape[0] * spacing[0] / 2)
    directions = np.asarray(FLARE_STORAGE[(index - 1) % len(FLARE_STORAGE)][1])
    corner = first_voxel_lps(spec.shape, spacing, 0.0, shift)
    case = f"FLARE23_{index:04d}"
    write_nifti(
        phantom.hu,
        flare_root / "imagesTr" / f"{case}_0000.nii.gz",
        spacing,
        directions=directions,
        origin_lps=stored_origin(corner, spec.shape, spacing, directions),
    )
    return case


def _write_tables(rsna_root: Path, patients: pd.DataFrame, series: pd.DataFrame) -> None:
    if patients.empty:  # a FLARE-only cohort
        return
    rsna_root.mkdir(parents=True, exist_ok=True)
    columns = ["patient_id", *LABEL_COLUMNS]
    for split, name in (("train", "train.csv"), ("test", "test_labels.csv")):
        part = patients[patients["split"] == split]
        if len(part):
            write_text_atomic(rsna_root / name, part[columns].to_csv(index=False))
    meta_columns = ["patient_id", "series_id", "aortic_hu", "incomplete_organ"]
    for split, name in (("train", "train_series_meta.csv"), ("test", "test_series_meta.csv")):
        part = series[series["split"] == split]
        if len(part):
            write_text_atomic(rsna_root / name, part[meta_columns].to_csv(index=False))


def parameter_differences(existing: Mapping[str, Any], requested: Mapping[str, Any]) -> str:
    """The parameters that differ, with both values: ``seed: existing 0, requested 1; ...``.

    Args:
        existing: The parameters a folder's ``cohort.json`` records.
        requested: Those of the cohort asked for (:meth:`CohortSpec.as_json`).
    """
    parts = []
    for name in [*requested, *(k for k in existing if k not in requested)]:
        old, new = existing.get(name, "not recorded"), requested.get(name, "not given")
        if old != new:
            parts.append(f"{name}: existing {old}, requested {new}")
    return "; ".join(parts)


def _load(root: Path, spec: CohortSpec) -> SyntheticCohort:
    rsna_root = root / "rsna"
    labels = (
        pd.read_csv(rsna_root / "train.csv")
        if (rsna_root / "train.csv").exists()
        else pd.DataFrame()
    )
    test_path = rsna_root / "test_labels.csv"
    test_labels = pd.read_csv(test_path) if test_path.exists() else pd.DataFrame()
    series = [
        pd.read_csv(rsna_root / name)
        for name in ("train_series_meta.csv", "test_series_meta.csv")
        if (rsna_root / name).exists()
    ]
    flare = sorted(
        p.name.removesuffix("_0000.nii.gz")
        for p in (root / "flare" / "imagesTr").glob("*_0000.nii.gz")
    )
    return SyntheticCohort(
        root=root,
        spec=spec,
        labels=labels,
        test_labels=test_labels,
        series=pd.concat(series, ignore_index=True) if series else pd.DataFrame(),
        flare_cases=flare,
    )
