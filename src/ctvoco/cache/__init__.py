"""The volume cache every training and prediction step reads from."""

from ctvoco.cache.builder import BuildSummary, SeriesSource, build_cache, parse_shard, select_shard
from ctvoco.cache.volume_cache import CacheWriteError, VolumeCache, check_key

__all__ = [
    "BuildSummary",
    "CacheWriteError",
    "SeriesSource",
    "VolumeCache",
    "build_cache",
    "check_key",
    "parse_shard",
    "select_shard",
]
