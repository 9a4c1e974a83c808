"""Reading a cache back for people and scripts: per-video statistics, tables, JSON."""
from .stats import video_stats, cache_stats

__all__ = ["video_stats", "cache_stats"]
