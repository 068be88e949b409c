"""Where a study's patients come from, and which of them each stage may see.

Two sources share one protocol: the evaluated patients are seen by no run (pretraining
included), an inner validation split selects the checkpoint, and the labelled fraction is
drawn from the remaining training pool.

* :class:`PhantomData`: the synthetic cohort of the demo (``+experiment=demo_pretrain`` /
  ``demo_finetune``), made in the study folder. Evaluated: its held-out test patients
  (``test_images``, ``test_labels.csv``); validation: fold 0 of the labelled patients;
  training pool: folds 1-4; pretraining: the FLARE volumes and the training images of
  folds 1-4.
* :class:`RsnaData`: a user's copy of RSNA 2023 (``train.csv``, ``train_images``), with
  FLARE23 for pretraining when given. The competition's test labels are not public, so the
  evaluated patients are fold 0 of the labelled patients, linked into a ``test_images``
  tree of the study folder; validation: fold 1; training pool: folds 2-4; pretraining: the
  FLARE volumes (if any) and the training images of folds 2-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from ctvoco.data.folds import load_or_make_folds
from ctvoco.data.rsna import images_dir, read_rsna_labels, read_series_meta
from ctvoco.errors import UserError
from ctvoco.io.atomic import write_csv_atomic

N_FOLDS = 5
"""Folds of the labelled patients (the data modules' default)."""
FOLD_SEED = 42
"""Seed of the fold assignment (the data modules' default)."""


@dataclass(frozen=True)
class HeldOut:
    """The evaluated patients.

    Attributes:
        images: A ``test_images`` tree holding only them.
        labels: Their ``train.csv``-shaped labels.
        cache_dir: Where their series are preprocessed for prediction (shared by all runs).
    """

    images: Path
    labels: pd.DataFrame
    cache_dir: Path


class StudyData(Protocol):
    """What the study needs from a data source."""

    name: str
    default_backbone: str

    def prepare(self) -> None:
        """Make what the runs read (cohort, folds, the evaluated patients' tree)."""

    def pretrain_overrides(self) -> list[str]:
        """Hydra overrides of ``ctvoco-pretrain`` selecting the pretraining volumes."""

    def finetune_overrides(self) -> list[str]:
        """Hydra overrides of ``ctvoco-finetune`` selecting training and validation."""

    def held_out(self) -> HeldOut:
        """The evaluated patients."""

    def pool_size(self) -> int:
        """Patients of the training pool (what a fraction of 1.0 labels)."""

    def describe(self) -> dict[str, str]:
        """Which patients each stage sees, in words (for ``protocol.json``)."""


def study_folds(rsna_root: Path, cache_dir: Path) -> pd.DataFrame:
    """``patient_id``, ``fold`` of the labelled patients, saved beside the cache.

    The same file the data modules make and read (same patients, folds and seed), so a
    study and its runs agree on who is in which fold.
    """
    labels = read_rsna_labels(rsna_root / "train.csv")
    meta_csv = rsna_root / "train_series_meta.csv"
    counts = read_series_meta(meta_csv).groupby("patient_id").size() if meta_csv.exists() else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    return load_or_make_folds(cache_dir, labels, counts, N_FOLDS, FOLD_SEED)


class PhantomData:
    """The demo's synthetic cohort, in ``<out>/cohort``."""

    name = "phantom"
    default_backbone = "test_efficientnet"

    def __init__(self, out: Path) -> None:
        self.cohort = out / "cohort"
        self.out = out

    def prepare(self) -> None:
        from importlib.resources import files

        from omegaconf import OmegaConf

        from ctvoco.synth.cohort import make_synthetic_cohort

        settings = OmegaConf.create(
            files("ctvoco.conf").joinpath("synthetic", "demo.yaml").read_text()
        )
        options = {k: v for k, v in OmegaConf.to_container(settings).items() if k != "root"}
        make_synthetic_cohort(self.cohort, **options)
        study_folds(self.cohort / "rsna", self.cohort / "cache" / "rsna")

    def pretrain_overrides(self) -> list[str]:
        return ["+experiment=demo_pretrain", f"synthetic.root={self.cohort}"]

    def finetune_overrides(self) -> list[str]:
        return ["+experiment=demo_finetune", f"synthetic.root={self.cohort}", "data.fold=0"]

    def held_out(self) -> HeldOut:
        labels = read_rsna_labels(self.cohort / "rsna" / "test_labels.csv")
        return HeldOut(self.cohort / "rsna" / "test_images", labels, self.out / "heldout_cache")

    def pool_size(self) -> int:
        folds = study_folds(self.cohort / "rsna", self.cohort / "cache" / "rsna")
        return int((folds["fold"] != 0).sum())

    def describe(self) -> dict[str, str]:
        return {
            "data": f"synthetic cohort {self.cohort} (conf/synthetic/demo.yaml)",
            "evaluated": "the cohort's held-out test patients (test_images, test_labels.csv)",
            "validation": "fold 0 of the labelled patients (checkpoint selection)",
            "training_pool": "folds 1-4 of the labelled patients",
            "pretraining": "the FLARE volumes and the training images of folds 1-4",
        }


class RsnaData:
    """A user's copy of RSNA 2023 at ``root`` (and FLARE23 at ``flare_root``, if given)."""

    name = "rsna"
    default_backbone = "efficientnet_b0"
    test_fold = 0
    validation_fold = 1

    def __init__(
        self, out: Path, root: Path, flare_root: Path | None, cache_dir: Path | None
    ) -> None:
        self.out = out
        self.root = root
        self.flare_root = flare_root
        self.cache_dir = cache_dir or out / "cache"
        for path in (root / "train.csv", root / "train_images"):
            if not path.exists():
                raise UserError(
                    f"--root {root}: {path} not found (--root is a copy of the RSNA 2023 "
                    "competition data: train.csv, train_series_meta.csv, train_images/)"
                )
        if flare_root is not None and not flare_root.is_dir():
            raise UserError(f"--flare-root {flare_root}: not a directory")

    def folds(self) -> pd.DataFrame:
        return study_folds(self.root, self.cache_dir / "rsna")

    def prepare(self) -> None:
        """Link the evaluated patients' folders into ``<out>/heldout/test_images``."""
        folds = self.folds()
        evaluated = folds.loc[folds["fold"] == self.test_fold, "patient_id"].astype(str)
        tree = self.out / "heldout" / "test_images"
        tree.mkdir(parents=True, exist_ok=True)
        source = images_dir(self.root, "train")
        for patient in evaluated:
            link = tree / patient
            if not link.is_symlink() and (source / patient).is_dir():
                link.symlink_to(source / patient, target_is_directory=True)
        labels = read_rsna_labels(self.root / "train.csv")
        mine = labels[labels["patient_id"].astype(str).isin(set(evaluated))]
        write_csv_atomic(self.out / "heldout" / "labels.csv", mine, index=False)

    def _fold_overrides(self, prefix: str) -> list[str]:
        return [f"{prefix}n_folds={N_FOLDS}", f"{prefix}fold_seed={FOLD_SEED}"]

    def pretrain_overrides(self) -> list[str]:
        excluded = f"[{self.test_fold},{self.validation_fold}]"
        if self.flare_root is None:
            return [
                "+experiment=rsna_pretrain",
                f"data.root={self.root}",
                f"data.cache_dir={self.cache_dir / 'rsna'}",
                f"data.exclude_folds={excluded}",
                *self._fold_overrides("data."),
            ]
        return [
            "+experiment=flare_rsna",
            f"data.members.rsna.root={self.root}",
            f"data.members.rsna.cache_dir={self.cache_dir / 'rsna'}",
            f"data.members.rsna.exclude_folds={excluded}",
            *self._fold_overrides("data.members.rsna."),
            f"data.members.flare.root={self.flare_root}",
            f"data.members.flare.cache_dir={self.cache_dir / 'flare'}",
        ]

    def finetune_overrides(self) -> list[str]:
        return [
            "+experiment=rsna",
            f"data.root={self.root}",
            f"data.cache_dir={self.cache_dir / 'rsna'}",
            f"data.fold={self.validation_fold}",
            f"data.exclude_folds=[{self.test_fold}]",
            *self._fold_overrides("data."),
        ]

    def held_out(self) -> HeldOut:
        labels = read_rsna_labels(self.out / "heldout" / "labels.csv")
        return HeldOut(self.out / "heldout" / "test_images", labels, self.out / "heldout_cache")

    def pool_size(self) -> int:
        folds = self.folds()
        return int((~folds["fold"].isin([self.test_fold, self.validation_fold])).sum())

    def describe(self) -> dict[str, str]:
        flare = f"the FLARE23 volumes of {self.flare_root} and " if self.flare_root else ""
        return {
            "data": f"RSNA 2023 at {self.root}",
            "evaluated": f"fold {self.test_fold} of the labelled patients (linked into "
            f"{self.out / 'heldout' / 'test_images'})",
            "validation": f"fold {self.validation_fold} of the labelled patients "
            "(checkpoint selection)",
            "training_pool": "folds 2-4 of the labelled patients",
            "pretraining": f"{flare}the training images of folds 2-4",
        }
