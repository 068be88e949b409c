"""Command-line entry points (Hydra apps) and the conventions they share."""

from ctvoco.cli.app import EXIT_USER_ERROR, hydra_app, prepare_run

__all__ = ["EXIT_USER_ERROR", "hydra_app", "prepare_run"]
