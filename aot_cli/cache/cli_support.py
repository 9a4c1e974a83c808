"""``aot compact`` behind the Click command: check the flags, compact (or plan), print one summary
line (or JSON). The work itself is :func:`aot_cli.cache.compact.compact`."""
from __future__ import annotations

import json
import sys
from typing import Optional

EXIT_USAGE = 2


def describe(report, path: str, dry_run: bool) -> str:
    """The one-line summary of a :class:`~aot_cli.cache.compact.CompactionReport`."""
    from .compact import human_bytes

    before, after = report.before, report.after
    if dry_run:
        return (f"{path}: {before.summary()}; aot compact would rewrite {len(report.parts)} index part(s) and "
                f"remove {report.files_removed} file(s) (nothing changed)")
    if not report.done:
        return f"{path}: nothing to compact ({before.summary()})"
    return (f"compacted {path}: {report.videos} videos in {report.shards_written + report.shards_linked} shard(s) "
            f"({report.shards_written} written, {report.shards_linked} kept as they were), was "
            f"{before.shard_files} file(s); {human_bytes(before.shard_bytes)} -> {human_bytes(after.shard_bytes)}, "
            f"freed {human_bytes(max(0, before.shard_bytes - after.shard_bytes))}, {report.rows_dropped} superseded "
            "row(s) dropped")


def run_compact(path: str, shard_size: Optional[str], dry_run: bool, as_json: bool, quiet: bool) -> int:
    """Run ``aot compact``: 0 compacted (or nothing to do), 2 bad flags, a cache that cannot be
    read or written, or a writer (another compaction) holding the cache. Errors are one line."""
    from ..config import parse_size
    from ..pipeline.progress import print_error, printable
    from .compact import DEFAULT_SHARD_SIZE, compact
    from .errors import CacheError

    try:
        size = DEFAULT_SHARD_SIZE if shard_size is None else parse_size(shard_size)
    except ValueError as exc:
        print_error(f"--shard-size: {exc}")
        return EXIT_USAGE
    try:
        report = compact(path, size, dry_run=dry_run)
    except CacheError as exc:
        print_error(exc)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print_error(f"{path}: cannot compact ({type(exc).__name__}: {exc})")
        return EXIT_USAGE
    if as_json:
        print(json.dumps({**report.to_dict(), "dry_run": dry_run}, indent=2))
    if not quiet:
        for part, why in report.left.items():
            print(printable(f"left index part {part!r} as it is: {why}"), file=sys.stderr)
        print(printable(describe(report, path, dry_run)), file=sys.stderr)
    return 0
