"""LightningDataModules shared by VoCo pretraining and injury classification.

- :class:`RSNADataModule`: RSNA 2023 series with labels and patient folds (``purpose=
  "classify"``), or as unlabelled volumes for pretraining (``purpose="pretrain"``) with
  ``exclude_folds`` keeping the downstream validation patients out.
- :class:`FLAREDataModule`: FLARE23 volumes, unlabelled.
- :class:`ConcatDataModule`: several of the above shuffled together (e.g. FLARE + RSNA).

The loaders they share (sharding, seeded shuffling, resuming mid-epoch) are in
:mod:`ctvoco.data.loading`.

Every module reads only from its volume cache (``data.cache_dir``); ``prepare_data``
builds a missing cache from ``data.root`` (or says which command to run), ``setup`` builds
the datasets. The view transform (what a model needs from a volume) is passed in by the
training program.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctvoco.cache.builder import BuildSummary, build_cache, is_done
from ctvoco.cache.volume_cache import VolumeCache
from ctvoco.data.flare import DEFAULT_PATTERNS, flare_cases
from ctvoco.data.folds import check_n_folds, load_or_make_folds
from ctvoco.data.image_labels import FILE_NAME as IMAGE_LABELS_FILE
from ctvoco.data.image_labels import attach_slice_labels, read_image_level_labels
from ctvoco.data.loading import ITEM_COLUMNS, VolumeDataModule, cache_items
from ctvoco.data.rsna import SPLITS, read_rsna_labels, read_series_meta, rsna_series
from ctvoco.errors import ArgumentError, UserError, look_up_option
from ctvoco.io.series import SeriesSource
from ctvoco.labels import TARGET_CLASSES, TARGETS, classes_from_labels
from ctvoco.preprocessing.pipeline import PreprocessConfig

log = logging.getLogger(__name__)

PURPOSES = ("classify", "pretrain")


class CachedVolumeDataModule(VolumeDataModule):
    """A data set with its own volume cache, built from ``root`` on demand.

    Args:
        root: Where the raw data set lives.
        cache_dir: The volume cache directory.
        preprocess: :class:`~ctvoco.preprocessing.PreprocessConfig` fields.
        auto_preprocess: Build missing cache entries in ``prepare_data`` (else fail with the
            ``ctvoco-preprocess`` command to run).
        preprocess_workers: Processes used when building the cache (0: in this process).
        val_fraction: Share of patients held out for validation where no folds apply.
        **loader: See :class:`VolumeDataModule`.

    Defaults are those of the shipped ``data`` configs (``conf/data/*.yaml``).
    """

    data_name = "volumes"

    def __init__(
        self,
        *,
        root: str,
        cache_dir: str,
        preprocess: Mapping[str, Any] | None = None,
        auto_preprocess: bool = True,
        preprocess_workers: int = 2,
        val_fraction: float = 0.1,
        **loader: Any,
    ) -> None:
        super().__init__(**loader)
        if not 0.0 <= val_fraction < 1.0:
            raise ArgumentError("val_fraction", f" must be in [0, 1); got {val_fraction}")
        self.root = Path(root)
        self.cache = VolumeCache(cache_dir)
        self.preprocess = PreprocessConfig.from_mapping(preprocess)
        self.auto_preprocess = auto_preprocess
        self.preprocess_workers = preprocess_workers
        self.val_fraction = val_fraction

    def sources(self) -> list[SeriesSource]:
        """Every series of the raw data set."""
        raise NotImplementedError

    def cache_only(self) -> bool:
        """True when the raw data is absent but a usable cache exists (e.g. a copied cache)."""
        return (
            not self.root.exists()
            and self.cache.variant() is not None
            and bool(self.cache.ready_keys())
        )

    def check_inputs(self) -> None:
        if self.cache_only():
            self.cache.ensure_variant(self.preprocess)
            return
        self.sources()  # raises a UserError saying where the data is expected
        self.cache.ensure_variant(self.preprocess)

    def prepare_data(self) -> None:
        """Build the series the cache lacks; series that failed before are not retried
        (``ctvoco-preprocess`` retries them)."""
        self.check_views_fit_model()
        self.build_cache(retry_failed=False)

    def build_cache(
        self, *, retry_failed: bool = False, shard: tuple[int, int] = (0, 1)
    ) -> BuildSummary | None:
        """Preprocess whatever the cache lacks; ``None`` when nothing was missing.

        Args:
            retry_failed: Also re-try series whose earlier attempt failed.
            shard: ``(i, n)``: only the ``i``-th of ``n`` disjoint parts.
        """
        if self.cache_only():
            self.cache.ensure_variant(self.preprocess)
            return None
        sources = self.sources()
        self.cache.ensure_variant(self.preprocess)
        records = {r["key"]: r for r in self.cache.records()}
        missing = [
            s for s in sources if not is_done(self.cache, s, records.get(s.key), retry_failed)
        ]
        if not missing:
            return None
        if not self.auto_preprocess:
            raise UserError(
                f"the cache at {self.cache.root} lacks {len(missing)} of {len(sources)} series; run "
                f"{self.preprocess_command()} (or set data.auto_preprocess=true)"
            )
        return build_cache(
            sources,
            self.cache,
            self.preprocess,
            num_workers=self.preprocess_workers,
            shard=shard,
            retry_failed=retry_failed,
        )

    def preprocess_command(self) -> str:
        """The shell command that fills this module's cache exactly as it expects it.

        It names the data set, ``data.root``, ``data.cache_dir``, every
        ``data.preprocess.*`` value (the cache's variant) and the series selection that
        differs from ``ctvoco-preprocess``'s default (``data.split``, ``data.patterns``), so
        the cache it builds is the one this run accepts.
        """
        import dataclasses
        import shlex

        overrides = {"data": self.data_name, "data.root": str(self.root)}
        overrides["data.cache_dir"] = str(self.cache.root)
        if getattr(self, "split", "train") != "train":
            overrides["data.split"] = self.split  # type: ignore[attr-defined]
        if tuple(getattr(self, "patterns", DEFAULT_PATTERNS)) != tuple(DEFAULT_PATTERNS):
            overrides["data.patterns"] = list(self.patterns)  # type: ignore[attr-defined]
        for option in dataclasses.fields(self.preprocess):
            overrides[f"data.preprocess.{option.name}"] = getattr(self.preprocess, option.name)
        args = [f"{key}={self._override_value(value)}" for key, value in overrides.items()]
        return shlex.join(["ctvoco-preprocess", *args])

    @staticmethod
    def _override_value(value: Any) -> str:
        """``value`` as Hydra's command-line grammar reads it back (lists, quoted strings)."""
        import re

        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list | tuple):
            return "[" + ",".join(CachedVolumeDataModule._override_value(v) for v in value) + "]"
        text = str(value)
        plain = re.fullmatch(r"[\w./~@%+:-]+", text) and not re.fullmatch(
            r"[-+]?[\d.]+(e[-+]?\d+)?|true|false|null|nan|inf", text, re.IGNORECASE
        )
        return text if plain else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def ready_items(self) -> pd.DataFrame:
        """Manifest rows of the series that are in the cache, as item rows."""
        return cache_items(self.cache)

    def holdout(self, items: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split items by patient: ``fraction`` of patients (at least one) for validation."""
        patients = np.array(sorted(items["patient_id"].unique()))
        if fraction <= 0 or len(patients) < 2:
            return items, items.iloc[:0]
        n_val = max(1, round(fraction * len(patients)))
        val_patients = set(np.random.default_rng(self.seed).choice(patients, n_val, replace=False))
        is_val = items["patient_id"].isin(val_patients)
        return items[~is_val].reset_index(drop=True), items[is_val].reset_index(drop=True)


class FLAREDataModule(CachedVolumeDataModule):
    """FLARE23 volumes (NIfTI), unlabelled: for pretraining.

    Args:
        patterns: Glob patterns of the volumes under ``root``.
        purpose: Only ``pretrain``.
        val_fraction: Share of volumes held out for validation (FLARE23 has about 4,000).
        **kwargs: See :class:`CachedVolumeDataModule`.
    """

    data_name = "flare"

    def __init__(
        self,
        *,
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        purpose: str = "pretrain",
        val_fraction: float = 0.05,
        **kwargs: Any,
    ) -> None:
        if purpose != "pretrain":
            raise UserError("FLARE23 has no injury labels: use it for pretraining only")
        super().__init__(val_fraction=val_fraction, **kwargs)
        self.patterns = tuple(patterns)

    def sources(self) -> list[SeriesSource]:
        return flare_cases(self.root, self.patterns)

    def split_items(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.holdout(self.ready_items(), self.val_fraction)


class RSNADataModule(CachedVolumeDataModule):
    """RSNA 2023 series, labelled (classification) or unlabelled (pretraining).

    Args:
        split: ``train`` or ``test`` (the image folder to read).
        purpose: ``classify`` (labels and folds) or ``pretrain`` (labels ignored).
        labels_csv: ``train.csv`` (default ``<root>/train.csv``).
        series_meta_csv: ``train_series_meta.csv`` (default ``<root>/train_series_meta.csv``),
            used for the series counts that folds are stratified on.
        fold: Validation fold for classification; ``None`` trains on every patient.
        n_folds: Number of folds.
        fold_seed: Seed of the fold assignment.
        exclude_folds: Folds whose patients this module never loads: for pretraining, the
            downstream validation (and test) patients; for classification, a held-out test
            fold (a study's evaluated patients), out of training and validation alike.
        train_fraction: Share of training patients used (label-efficiency studies).
        image_level_labels: ``image_level_labels.csv`` for per-slice bowel/extravasation
            targets (classification): ``auto`` uses ``<root>/image_level_labels.csv`` when it
            exists, ``None`` never, a path that file (see :mod:`ctvoco.data.image_labels`).
        **kwargs: See :class:`CachedVolumeDataModule`.
    """

    data_name = "rsna"

    def __init__(
        self,
        *,
        split: str = "train",
        purpose: str = "classify",
        labels_csv: str | None = None,
        series_meta_csv: str | None = None,
        fold: int | None = 0,
        n_folds: int = 5,
        fold_seed: int = 42,
        exclude_folds: Sequence[int] = (),
        train_fraction: float = 1.0,
        image_level_labels: str | None = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_level_labels = image_level_labels
        look_up_option("purpose", purpose, PURPOSES)
        look_up_option("split", split, SPLITS)
        check_n_folds(n_folds)
        if fold is not None and not 0 <= fold < n_folds:
            raise ArgumentError("fold", f" must be in 0..{n_folds - 1} (or null); got {fold}")
        bad = [f for f in exclude_folds if not 0 <= int(f) < n_folds]
        if bad:
            raise ArgumentError("exclude_folds", f" must be in 0..{n_folds - 1}; got {bad}")
        if purpose == "classify" and fold is not None and fold in {int(f) for f in exclude_folds}:
            raise UserError(
                f"fold {fold} is both the validation fold and excluded (data.exclude_folds="
                f"{list(exclude_folds)}); validate on another fold"
            )
        if not 0.0 < train_fraction <= 1.0:
            raise ArgumentError("train_fraction", f" must be in (0, 1]; got {train_fraction}")
        self.split = split
        self.purpose = purpose
        self.labels_csv = Path(labels_csv) if labels_csv else self.root / "train.csv"
        self.series_meta_csv = (
            Path(series_meta_csv) if series_meta_csv else self.root / "train_series_meta.csv"
        )
        self.fold = fold
        self.n_folds = n_folds
        self.fold_seed = fold_seed
        self.exclude_folds = tuple(int(f) for f in exclude_folds)
        self.train_fraction = train_fraction

    def sources(self) -> list[SeriesSource]:
        return rsna_series(self.root, self.split)

    def ready_items(self) -> pd.DataFrame:
        """Cached series of this split only (a cache may hold train and test series)."""
        items = super().ready_items()
        if self.root.exists():
            keys = {s.key for s in self.sources()}
            return items[items["key"].isin(keys)].reset_index(drop=True)
        manifest = self.cache.manifest().set_index("key")["source"].astype(str)
        in_split = [f"{self.split}_images" in Path(manifest.get(k, "")).parts for k in items["key"]]
        return items[in_split].reset_index(drop=True)

    def check_inputs(self) -> None:
        super().check_inputs()
        if self.purpose == "classify" or self.exclude_folds:
            self.labels()

    def labels(self) -> pd.DataFrame:
        """Validated labels (``train.csv``)."""
        if not self.labels_csv.exists():
            raise UserError(
                f"labels not found: {self.labels_csv} (set data.labels_csv=); classification "
                "and data.exclude_folds need train.csv"
            )
        return read_rsna_labels(self.labels_csv)

    def folds(self, labels: pd.DataFrame | None = None) -> pd.DataFrame:
        """``patient_id``, ``fold`` for every labelled patient, saved next to the cache."""
        labels = self.labels() if labels is None else labels
        counts = None
        if self.series_meta_csv.exists():
            counts = read_series_meta(self.series_meta_csv).groupby("patient_id").size()
        return load_or_make_folds(self.cache.root, labels, counts, self.n_folds, self.fold_seed)

    def split_items(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        items = self.ready_items()
        items["patient_int"] = items["patient_id"].astype(np.int64)
        if self.purpose == "pretrain":
            if self.exclude_folds:
                folds = self.folds()
                excluded = set(folds.loc[folds["fold"].isin(self.exclude_folds), "patient_id"])
                items = items[~items["patient_int"].isin(excluded)]
                log.info(
                    "pretraining excludes %d patients of folds %s",
                    len(excluded),
                    self.exclude_folds,
                )
            train, val = self.holdout(items.drop(columns="patient_int"), self.val_fraction)
            return train, val
        labels = self.labels()
        labelled = self._attach_labels(items, labels)
        labelled = self._attach_image_labels(labelled)
        folds = self.folds(labels).set_index("patient_id")["fold"]
        fold_of = labelled["patient_int"].map(folds)
        if self.exclude_folds:
            kept = ~fold_of.isin(self.exclude_folds)
            log.info(
                "classification excludes %d patients of folds %s",
                labelled.loc[~kept, "patient_int"].nunique(),
                self.exclude_folds,
            )
            labelled, fold_of = labelled[kept], fold_of[kept]
        if self.fold is None:
            train, val = labelled, labelled.iloc[:0]
        else:
            train, val = labelled[fold_of != self.fold], labelled[fold_of == self.fold]
        train = self._subsample(train)
        return (
            train.drop(columns="patient_int").reset_index(drop=True),
            val.drop(columns="patient_int").reset_index(drop=True),
        )

    def class_prevalence(self) -> list[float]:
        """Frequency of each of the 13 classes among the training patients (fallback prediction)."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        items = self.train_set.items.drop_duplicates("patient_id")
        frequencies = []
        for target in TARGETS:
            counts = np.bincount(
                items[target].to_numpy(dtype=np.int64), minlength=len(TARGET_CLASSES[target])
            )
            frequencies += (counts / max(1, counts.sum())).tolist()
        return frequencies

    def _attach_labels(self, items: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
        classes = pd.DataFrame(classes_from_labels(labels), columns=list(TARGETS))
        classes["patient_int"] = labels["patient_id"].to_numpy()
        merged = items.merge(classes, on="patient_int", how="left", indicator=True)
        unlabelled = merged.loc[merged["_merge"] == "left_only", "patient_id"].unique()
        if len(unlabelled):
            log.warning(
                "%d patient(s) have images but no labels in %s and are skipped: %s",
                len(unlabelled),
                self.labels_csv,
                ", ".join(map(str, unlabelled[:5])),
            )
        without_images = sorted(set(labels["patient_id"]) - set(items["patient_int"]))
        if without_images:
            log.warning(
                "%d labelled patient(s) have no cached series and are skipped: %s",
                len(without_images),
                ", ".join(map(str, without_images[:5])),
            )
        merged = merged[merged["_merge"] == "both"].drop(columns="_merge")
        merged[list(TARGETS)] = merged[list(TARGETS)].astype(np.int64)
        return merged

    def image_labels_path(self) -> Path | None:
        """The image-level label file in use; ``None`` when off (or ``auto`` without one).

        Raises:
            UserError: ``data.image_level_labels`` names a file that does not exist.
        """
        value = self.image_level_labels
        if value is None or str(value).strip().lower() in ("", "null", "none"):
            return None
        if str(value) == "auto":
            path = self.root / IMAGE_LABELS_FILE
            return path if path.exists() else None
        path = Path(value)
        if not path.exists():
            raise UserError(
                f"data.image_level_labels: {path} not found (set it to a file, auto or null)"
            )
        return path

    def _attach_image_labels(self, items: pd.DataFrame) -> pd.DataFrame:
        """Per-slice image-level targets of each series, when a label file is in use."""
        path = self.image_labels_path()
        if path is None:
            return items
        if self.preprocess.target_spacing is not None:
            # slices are matched through the stretch of the body block to the cache depth
            reason = (
                "with data.preprocess.target_spacing the cached slices do not map to source "
                "slices the way per-slice targets assume"
            )
            if str(self.image_level_labels) == "auto":
                log.warning("per-slice targets of %s are not used: %s", path, reason)
                return items
            raise UserError(
                f"data.image_level_labels={path}: {reason}; set data.image_level_labels=null "
                "or data.preprocess.target_spacing=null"
            )
        log.info("per-slice targets from %s", path)
        return attach_slice_labels(
            items,
            read_image_level_labels(path),
            self.cache.record,
            self.preprocess.shape[0],
            str(path),
        )

    def _subsample(self, train: pd.DataFrame) -> pd.DataFrame:
        if self.train_fraction >= 1.0:
            return train
        patients = np.array(sorted(train["patient_int"].unique()))
        n_keep = max(1, round(self.train_fraction * len(patients)))
        keep = np.random.default_rng([self.seed, 1]).choice(patients, n_keep, replace=False)
        return train[train["patient_int"].isin(set(keep))]


class ConcatDataModule(VolumeDataModule):
    """Several cached data sets shuffled together (e.g. FLARE + RSNA for pretraining).

    Args:
        members: Named data modules; their caches are built by their own ``prepare_data``.
        **loader: Loader options (see :class:`VolumeDataModule`); members' own are ignored.
    """

    def __init__(self, *, members: Mapping[str, CachedVolumeDataModule], **loader: Any) -> None:
        super().__init__(**loader)
        if not members:
            raise ArgumentError("members", " is empty: name at least one data set")
        self.members = dict(members)

    def check_inputs(self) -> None:
        for member in self.members.values():
            member.check_inputs()

    def prepare_data(self) -> None:
        self.check_views_fit_model()
        for member in self.members.values():
            member.prepare_data()

    def split_items(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        parts = [member.split_items() for member in self.members.values()]
        train = pd.concat([p[0][ITEM_COLUMNS] for p in parts], ignore_index=True)
        val = pd.concat([p[1][ITEM_COLUMNS] for p in parts], ignore_index=True)
        return train, val
