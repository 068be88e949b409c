"""What a trained classifier needs at prediction time: :class:`InferenceSpec`.

The spec says how the model's inputs are made (the preprocessing of the cache and the
evaluation views) and what the training patients looked like (the class prevalence, the
fallback prediction and the ``metric`` loss's normaliser). The caller gives it to
:class:`~ctvoco.classify.InjuryClassifier`; the module writes it into its checkpoints under
:data:`CHECKPOINT_KEY` as plain values, and prediction reads it back with
:meth:`InferenceSpec.from_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pytorch_lightning as pl

from ctvoco.classify.views import SliceStackViews
from ctvoco.errors import DataError, UserError
from ctvoco.labels import PREDICTION_COLUMNS
from ctvoco.preprocessing.pipeline import ALGORITHM_VERSION, PreprocessConfig

CHECKPOINT_KEY = "inference_spec"
"""The checkpoint entry that holds :meth:`InferenceSpec.to_dict`."""


class SpecSource(Protocol):
    """A data module that can say how its inputs are made (e.g. ``RSNADataModule``)."""

    preprocess: PreprocessConfig
    views: Any
    val_views: Any

    def class_prevalence(self) -> list[float]: ...


@dataclass(frozen=True)
class InferenceSpec:
    """How a classifier's inputs are made and the training prevalence.

    Attributes:
        preprocess: The preprocessing of the volume cache the model was trained on.
        views: The evaluation views (stored as :meth:`SliceStackViews.for_eval` gives them:
            centre crop, no augmentation).
        prevalence: The 13 training class frequencies in ``sample_submission.csv`` column
            order; ``None`` when unknown.
        preprocess_version: The preprocessing algorithm version the cache was made with.

    Raises:
        DataError: ``prevalence`` does not hold 13 numbers.
    """

    preprocess: PreprocessConfig
    views: SliceStackViews
    prevalence: tuple[float, ...] | None = None
    preprocess_version: int = ALGORITHM_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", self.views.for_eval())
        if self.prevalence is not None:
            values = tuple(float(p) for p in self.prevalence)
            if len(values) != len(PREDICTION_COLUMNS):
                raise DataError(
                    f"inference spec: prevalence must hold {len(PREDICTION_COLUMNS)} class "
                    f"frequencies; got {len(values)}"
                )
            object.__setattr__(self, "prevalence", values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, numbers, strings) for a checkpoint read as weights only."""
        preprocess = self.preprocess.fingerprint()
        preprocess["algorithm_version"] = self.preprocess_version
        return {
            "preprocess": preprocess,
            "views": dataclasses.asdict(self.views),
            "prevalence": None if self.prevalence is None else list(self.prevalence),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str) -> InferenceSpec:
        """The spec of :meth:`to_dict`'s values.

        Args:
            values: ``preprocess`` (a preprocessing fingerprint), ``views`` (view settings;
                unknown keys are ignored) and ``prevalence`` (13 numbers or ``None``).
            where: The file the values come from, named in errors.

        Raises:
            DataError: Naming ``where`` and what is missing or invalid.
        """
        if not isinstance(values, Mapping) or not isinstance(values.get("preprocess"), Mapping):
            raise DataError(f"{where}: the inference spec has no preprocessing settings")
        preprocess = dict(values["preprocess"])
        version = preprocess.pop("algorithm_version", ALGORITHM_VERSION)
        view_values = values.get("views") or {}
        known = SliceStackViews.__dataclass_fields__
        try:
            return cls(
                preprocess=PreprocessConfig.from_mapping(preprocess),
                views=SliceStackViews(**{k: v for k, v in view_values.items() if k in known}),
                prevalence=_prevalence(values.get("prevalence")),
                preprocess_version=int(version),
            )
        except (UserError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: the inference spec is not usable ({exc})") from exc

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Mapping[str, Any], path: str | os.PathLike[str]
    ) -> InferenceSpec:
        """The spec a classifier checkpoint carries.

        Checkpoints of earlier versions record it in their hyper-parameters
        (``data_config`` and ``prevalence``); those are read the same way.

        Raises:
            DataError: Naming ``path``: the checkpoint records no preprocessing, or an
                unusable one.
        """
        stored = checkpoint.get(CHECKPOINT_KEY)
        if stored is not None:
            return cls.from_dict(stored, str(path))
        hparams = checkpoint.get("hyper_parameters") or {}
        data_config = hparams.get("data_config")
        if not data_config:
            raise DataError(
                f"{path}: the checkpoint does not record its preprocessing (no {CHECKPOINT_KEY} "
                "and no data_config); ctvoco-predict needs one written by ctvoco-finetune"
            )
        return cls.from_dict({**data_config, "prevalence": hparams.get("prevalence")}, str(path))

    @classmethod
    def from_datamodule(cls, datamodule: SpecSource) -> InferenceSpec:
        """The spec of a classification data module: its preprocessing, its validation views
        (or its training views) and its training patients' prevalence.

        The module's cache must be ready: the prevalence comes from its training set.
        """
        views = datamodule.val_views or datamodule.views
        if not isinstance(views, SliceStackViews):
            raise UserError(
                f"a classifier's inference spec needs SliceStackViews; the data module has "
                f"{type(views).__name__}"
            )
        return cls(
            preprocess=datamodule.preprocess,
            views=views,
            prevalence=tuple(datamodule.class_prevalence()),
        )

    def same_preprocessing(self, other: InferenceSpec) -> bool:
        """Whether ``other`` reads the same cache arrays (settings and algorithm version)."""
        return (self.preprocess, self.preprocess_version) == (
            other.preprocess,
            other.preprocess_version,
        )


def _prevalence(value: object) -> tuple[float, ...] | None:
    """Stored prevalence as a tuple of floats; ``None`` for none."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise DataError(f"prevalence must be a list of numbers; got {value!r}")
    return tuple(float(p) for p in value)


class InferenceSpecFromData(pl.Callback):
    """Give the classifier the spec of the data module it is trained on, once that is set up.

    For training programs that build the model before the data (the cache may not exist
    yet): at ``setup("fit")``, after the data module's own setup, a classifier without a
    spec gets :meth:`InferenceSpec.from_datamodule` of ``datamodule``. An
    :class:`~ctvoco.classify.module.InjuryClassifier` built without ``inference=`` attaches
    this callback itself, so ``Trainer.fit(model, datamodule=...)`` records the spec.

    Args:
        datamodule: The data module passed to ``Trainer.fit``; ``None``: the trainer's
            ``datamodule`` (nothing is recorded when the trainer was given bare loaders).
    """

    def __init__(self, datamodule: SpecSource | None = None) -> None:
        self.datamodule = datamodule

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        source = self.datamodule if self.datamodule is not None else trainer.datamodule
        if stage == "fit" and source is not None and getattr(pl_module, "inference", None) is None:
            pl_module.inference = InferenceSpec.from_datamodule(source)
