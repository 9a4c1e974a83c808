#!/usr/bin/env python
"""What committing videos costs, and how many shard files a long run leaves, with segments
appended to the current shard (the writer's way since cache format 2) against a new shard file per
commit (the way before: what ``shard_size=1`` still does).

A long CPU run commits every ``--flush-every`` seconds, about one 1.3 MB video each time. This
writes ``--commits`` such commits (``--mb`` MB of bf16 tokens each) into two caches, alternating
commit by commit between them so that both see the same machine load, and reports the median time
of a commit (segment write + fsync + index row + fsync), the shard files each cache ends with,
their mean size, the time to read every video back, and what ``aot compact`` takes to turn the
one-file-per-commit cache into shards of the same size. Prints JSON.

    python benchmarks/cache_write.py --commits 120 --mb 1.3 --shard-size 64MB
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from aot_cli.cache import CacheWriter, TokenCache
from aot_cli.cache.compact import compact
from aot_cli.config import parse_size


def video(seed: int, nbytes: int):
    g = torch.Generator().manual_seed(seed)
    tokens = max(1, nbytes // (2 * 896))
    return {"tokens": torch.randn(tokens, 896, generator=g).to(torch.bfloat16),
            "kind": torch.ones(tokens, dtype=torch.uint8)}, {"seed": seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=120)
    parser.add_argument("--mb", type=float, default=1.3, help="MB per commit (one video)")
    parser.add_argument("--shard-size", default="64MB", help="shard size of the appending cache")
    args = parser.parse_args()
    size = parse_size(args.shard_size)
    nbytes = int(args.mb * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        writers = {"append": CacheWriter(Path(tmp) / "append", shard_size=size),
                   "new_file_per_commit": CacheWriter(Path(tmp) / "files", shard_size=1)}
        times = {name: [] for name in writers}
        for k in range(args.commits):
            tensors, meta = video(k, nbytes)
            for name, writer in writers.items():
                t0 = time.perf_counter()
                writer.add(f"v{k}", tensors, meta)  # commits at once when the shard size is reached
                writer.flush()
                times[name].append(time.perf_counter() - t0)
        result = {"commits": args.commits, "mb_per_commit": args.mb, "shard_size": size,
                  "loadavg": os.getloadavg()}
        for name, writer in writers.items():
            writer.close()
            shards = sorted((writer.directory / "shards").iterdir())
            t0 = time.perf_counter()
            cache = TokenCache(writer.directory)
            for vid in cache.ids():
                cache[vid].tokens
            read_s = time.perf_counter() - t0
            result[name] = {"median_commit_s": round(statistics.median(times[name]), 5),
                            "shard_files": len(shards),
                            "mean_shard_mb": round(sum(p.stat().st_size for p in shards) / len(shards) / 1e6, 2),
                            "read_all_s": round(read_s, 3)}
        t0 = time.perf_counter()
        report = compact(writers["new_file_per_commit"].directory, size)
        result["compact_new_file_per_commit_cache"] = {
            "seconds": round(time.perf_counter() - t0, 3), "shards_after": report.shards_written + report.shards_linked,
            "mb_per_s": round(report.before.shard_bytes / 1e6 / (time.perf_counter() - t0), 1)}
        result["commit_time_ratio_append_vs_new_file"] = round(
            statistics.median(a / b for a, b in zip(times["append"], times["new_file_per_commit"])), 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
