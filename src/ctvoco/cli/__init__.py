"""Command-line entry points (Hydra apps) and the conventions they share."""

from ctvoco.cli.app import hydra_app
from ctvoco.cli.run_setup import prepare_run
from ctvoco.cli.user_errors import EXIT_USER_ERROR

__all__ = ["EXIT_USER_ERROR", "hydra_app", "prepare_run"]
