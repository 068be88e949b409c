"""A Hydra launcher that runs each job of a multirun as a single run in a child process.

Selected by ``hydra/launcher=ctvoco_process`` (the default of every ctvoco program). The
sweep process keeps Hydra's record of each job (``<sweep dir>/<job>/.hydra/``) and hands
the job's result to the sweeper; the child does the work, one job after another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from ctvoco.cli.jobs import run_job_in_child

log = logging.getLogger(__name__)


class ProcessLauncher(Launcher):
    """Run the jobs of a sweep one after another, each in a fresh process.

    The task function Hydra hands over is not called in this process: each job's child
    is the same program, started with the job's overrides, and calls it there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the sweep's config and Hydra context for :meth:`launch`."""
        self.config = config
        self.hydra_context = hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run one batch of jobs, numbered from ``initial_job_idx``; their results in order."""
        if self.config is None or self.hydra_context is None:
            raise RuntimeError("ProcessLauncher.launch called before setup")
        setup_globals()
        hydra = self.config.hydra
        configure_log(hydra.hydra_logging, hydra.verbose)
        Path(str(hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns = []
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("job %d: %s", number, " ".join(filter_overrides(overrides)))
            returns.append(self._launch_one(list(overrides), number))
            configure_log(hydra.hydra_logging, hydra.verbose)
        return returns

    def _launch_one(self, overrides: list[str], number: int) -> JobReturn:
        """Compose job ``number``'s config and run it through :func:`run_job_in_child`."""
        assert self.config is not None and self.hydra_context is not None
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(job_config):
            job_config.hydra.job.id = number
            job_config.hydra.job.num = number
        return run_job(
            hydra_context=self.hydra_context,
            task_function=run_job_in_child,
            config=job_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
