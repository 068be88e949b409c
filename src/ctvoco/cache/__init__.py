"""The volume cache every training and prediction step reads from."""

from ctvoco.cache.builder import BuildSummary, build_cache, parse_shard, select_shard
from ctvoco.cache.volume_cache import CacheWriteError, VolumeCache

__all__ = [
    "BuildSummary",
    "CacheWriteError",
    "VolumeCache",
    "build_cache",
    "parse_shard",
    "select_shard",
]
