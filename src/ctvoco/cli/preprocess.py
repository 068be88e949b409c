"""``ctvoco-preprocess``: fill a volume cache from an RSNA or FLARE tree.

Examples::

    ctvoco-preprocess data=rsna data.root=/data/rsna data.cache_dir=/cache/rsna num_workers=8
    ctvoco-preprocess data=flare data.root=/data/FLARE23 data.cache_dir=/cache/flare shard=3/16
"""

from __future__ import annotations

from omegaconf import DictConfig

from ctvoco.cache.builder import parse_shard
from ctvoco.cli.app import ensure_writable_dir, hydra_app
from ctvoco.cli.components import build
from ctvoco.data.datamodules import CachedVolumeDataModule, ConcatDataModule
from ctvoco.errors import UserError


@hydra_app("preprocess")
def main(cfg: DictConfig) -> None:
    """Preprocess every series of ``data`` that its cache lacks; a summary ends the run."""
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


if __name__ == "__main__":
    main()
