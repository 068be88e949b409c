"""``ctvoco-synth``: write a synthetic cohort (RSNA DICOM tree + FLARE NIfTI tree)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ctvoco.cli.app import hydra_app
from ctvoco.cli.run_setup import ensure_writable_dir
from ctvoco.errors import UserError
from ctvoco.synth.cohort import make_synthetic_cohort
from ctvoco.synth.labels import DEFAULT_PREVALENCE


@hydra_app("synth")
def main(cfg: DictConfig) -> None:
    """Write the cohort under ``root`` and print how to preprocess and train on it."""
    root = ensure_writable_dir(cfg.root, "root")
    cohort = make_synthetic_cohort(
        root,
        n_patients=int(cfg.n_patients),
        n_test=int(cfg.n_test),
        n_flare=int(cfg.n_flare),
        seed=int(cfg.seed),
        shape=tuple(cfg.shape),
        spacing=tuple(cfg.spacing) if cfg.spacing is not None else None,
        fov_mm=tuple(cfg.fov_mm),
        second_series_fraction=float(cfg.second_series_fraction),
        segmented_fraction=float(cfg.segmented_fraction),
        prevalence=prevalence_option(cfg.get("prevalence")),
    )
    print(f"RSNA layout:  {cohort.rsna_root}   (data=rsna data.root={cohort.rsna_root})")
    print(f"FLARE layout: {cohort.flare_root}  (data=flare data.root={cohort.flare_root})")


def prevalence_option(value: Any) -> dict[str, tuple[float, ...]] | None:
    """``prevalence={liver: [0.5, 0.3, 0.2]}``: class probabilities per target; the targets
    not given keep the phantom's defaults. ``None`` keeps them all."""
    if value is None:
        return None
    given = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    if not isinstance(given, Mapping):
        raise UserError(
            "prevalence must map targets to class probabilities, e.g. "
            f"prevalence={{liver:[0.5,0.3,0.2]}}; got {given!r}"
        )
    try:
        chosen = {str(t): tuple(float(p) for p in probs) for t, probs in given.items()}
    except (TypeError, ValueError):
        raise UserError(
            f"prevalence values must be lists of probabilities; got {given!r}"
        ) from None
    return {**DEFAULT_PREVALENCE, **chosen}


if __name__ == "__main__":
    main()
