"""``ctvoco-preprocess``: fill a volume cache from an RSNA or FLARE tree.

Examples::

    ctvoco-preprocess data=rsna data.root=/data/rsna data.cache_dir=/cache/rsna num_workers=8
    ctvoco-preprocess data=flare data.root=/data/FLARE23 data.cache_dir=/cache/flare shard=3/16

The exit status is 0 when every series is in the cache, 1 when some series failed (their
errors are in the manifest; the others are done), 2 for a mistake in the command or a cache
directory that cannot be written.

Preprocessing worker processes import this module again (it is the program's main module),
so it imports nothing heavy at module level: the data modules (and with them torch) are
imported inside :func:`main`, which workers never run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctvoco.cli.app import hydra_app

if TYPE_CHECKING:
    from omegaconf import DictConfig

EXIT_SERIES_FAILED = 1
"""Exit status when the run finished but some series failed."""


@hydra_app("preprocess")
def main(cfg: DictConfig) -> None:
    """Preprocess every series of ``data`` that its cache lacks; a summary ends the run."""
    from ctvoco.cache.builder import parse_shard
    from ctvoco.cache.workers import start_worker_server

    if int(cfg.num_workers) > 0:
        start_worker_server()  # loads the worker modules while this process loads torch

    from ctvoco.cli.components import build
    from ctvoco.cli.run_setup import ensure_writable_dir
    from ctvoco.data.datamodules import CachedVolumeDataModule, ConcatDataModule
    from ctvoco.errors import UserError

    datamodule = build(cfg, "data")
    members = (
        datamodule.members.values() if isinstance(datamodule, ConcatDataModule) else [datamodule]
    )
    shard = parse_shard(cfg.get("shard"))
    failed = 0
    for member in members:
        if not isinstance(member, CachedVolumeDataModule):
            raise UserError(f"data={type(member).__name__} has no cache to preprocess")
        ensure_writable_dir(member.cache.root, "data.cache_dir")
        member.auto_preprocess = True
        member.preprocess_workers = int(cfg.num_workers)
        summary = member.build_cache(retry_failed=bool(cfg.retry_failed), shard=shard)
        if summary is None:
            print(f"cache {member.cache.root}: complete, nothing to do")
        else:
            failed += len(summary.failed)
    if failed:
        print(f"{failed} series failed; their errors are in the manifest (status=failed)")
        raise SystemExit(EXIT_SERIES_FAILED)


if __name__ == "__main__":
    main()
