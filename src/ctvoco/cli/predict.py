"""``ctvoco-predict``: a Kaggle submission from CT series and trained classifiers.

Examples::

    ctvoco-predict checkpoint=fold0/checkpoints/last.ckpt input=/data/rsna/test_images output=submission.csv
    ctvoco-predict checkpoint=a.ckpt checkpoint=b.ckpt input=/data/rsna output=submission.csv
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, ListConfig

from ctvoco.cli.app import hydra_app
from ctvoco.errors import UserError


@hydra_app("predict")
def _predict(cfg: DictConfig) -> None:
    from ctvoco.classify.scaling import format_factors
    from ctvoco.inference import predict_submission

    checkpoints = (
        list(cfg.checkpoint) if isinstance(cfg.checkpoint, ListConfig) else [cfg.checkpoint]
    )
    result = predict_submission(
        [str(c) for c in checkpoints],
        str(cfg.input),
        str(cfg.output),
        cache_dir=cfg.cache_dir,
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        preprocess_workers=int(cfg.preprocess_workers),
        tta=cfg.tta,
        aggregate=str(cfg.aggregate),
        device=str(cfg.device),
        scaling=_scaling_option(cfg.get("scaling")),
    )
    print(
        f"submission: {cfg.output} ({len(result.submission)} patients, {len(result.series)} series, "
        f"{len(result.failed_series)} unreadable series, {len(result.fallback_patients)} patients "
        "predicted from the training prevalence)"
    )
    if result.scaling is not None:
        print(f"probability scaling applied: {format_factors(result.scaling)}")


def _scaling_option(value: object) -> str | bool | None:
    """``scaling``: a ``scaling.json`` path, ``false`` (none) or ``null`` (the checkpoints').

    Raises:
        UserError: ``scaling=true`` (a file is needed, or null for the checkpoints' factors).
    """
    if value is None or value is False:
        return value
    if value is True or str(value).strip() == "":
        raise UserError(
            f"scaling={value} is not a file; pass scaling=<scaling.json>, scaling=false for "
            "none, or leave it unset for the factors stored in the checkpoints"
        )
    return str(value)


def merge_repeated(argv: list[str], key: str) -> list[str]:
    """``key=a key=b`` -> ``key=[a,b]`` (Hydra keeps only the last of repeated overrides)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")]
    if len(values) < 2:
        return argv
    rest = [a for a in argv if not a.startswith(f"{key}=")]
    return [*rest, f"{key}=[{','.join(values)}]"]


def main() -> None:
    """Console script: accept repeated ``checkpoint=`` arguments, then run the Hydra app."""
    sys.argv = [sys.argv[0], *merge_repeated(sys.argv[1:], "checkpoint")]
    _predict()


if __name__ == "__main__":
    main()
