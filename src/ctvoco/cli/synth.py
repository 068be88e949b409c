"""``ctvoco-synth``: write a synthetic cohort (RSNA DICOM tree + FLARE NIfTI tree)."""

from __future__ import annotations

from omegaconf import DictConfig

from ctvoco.cli.app import ensure_writable_dir, hydra_app
from ctvoco.synth.cohort import make_synthetic_cohort


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
    )
    print(f"RSNA layout:  {cohort.rsna_root}   (data=rsna data.root={cohort.rsna_root})")
    print(f"FLARE layout: {cohort.flare_root}  (data=flare data.root={cohort.flare_root})")


if __name__ == "__main__":
    main()
