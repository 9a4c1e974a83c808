#!/usr/bin/env python
"""What the hardened cache reader costs.

1. Reading tokens: ``TokenCache`` (plain ``pread`` into a fresh buffer, the reader's way since
   tensors may change underneath) against a memory map through ``safetensors.safe_open`` (the old
   way, which a shard truncated by another process turns into SIGBUS). Both read every video's
   tokens from a warm page cache and use every element (``float().sum()``), so the map's page
   faults count; runs alternate and the median is reported.
2. Opening a cache: ``TokenCache(dir)`` over an index of many rows (each row parsed with the bounded
   JSON parser, nesting measured first).
3. ``aot inspect --json`` on a one-video file, in a fresh process (wall time, best of 5), and the
   reader path alone (``TokenCache`` + inspect statistics, imported without the package's
   ``__init__``), with whether torch was imported.

Prints JSON. The numbers depend on the machine's load; the script prints ``os.getloadavg()`` too.

    python benchmarks/cache_read.py              # defaults: 40 x [650, 3584] bf16, 200 x [80, 896]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from safetensors import safe_open

from aot_cli.cache import CacheWriter, TokenCache, write_single

REPO = Path(__file__).resolve().parent.parent


def build(directory: Path, count: int, tokens: int, dim: int) -> Path:
    with CacheWriter(directory, shard_size=256 << 20) as writer:
        for k in range(count):
            g = torch.Generator().manual_seed(k)
            writer.add(f"v{k}", {"tokens": torch.randn(tokens, dim, generator=g).to(torch.bfloat16),
                                 "kind": torch.ones(tokens, dtype=torch.uint8)}, {"k": k})
    return directory


def read_tokens_reader(directory: Path) -> float:
    t0 = time.perf_counter()
    cache = TokenCache(directory)
    total = 0.0
    for vid in cache.ids():
        total += float(cache[vid].tokens.float().sum())
    return time.perf_counter() - t0


def read_tokens_mmap(directory: Path) -> float:
    t0 = time.perf_counter()
    cache = TokenCache(directory)  # the same index work; only the tensor reads differ
    handles = {}
    total = 0.0
    for row in cache.entries():
        path = directory / row["shard"]
        if path not in handles:
            handles[path] = safe_open(str(path), framework="pt")
        total += float(handles[path].get_tensor(f"{row['key']}.tokens").float().sum())
    return time.perf_counter() - t0


def paired(directory: Path, repeat: int):
    """Median seconds of each way, runs alternating (a busy machine slows both alike)."""
    read_tokens_reader(directory), read_tokens_mmap(directory)  # warm the page cache
    ours, mapped = [], []
    for _ in range(repeat):
        ours.append(read_tokens_reader(directory))
        mapped.append(read_tokens_mmap(directory))
    return statistics.median(ours), statistics.median(mapped)


def index_open(work: Path, rows: int) -> dict:
    directory = work / "index-bench"
    with CacheWriter(directory, shard_size=64 << 20) as writer:
        meta = {"video": {"path": "/data/x.mp4", "sha256": "0" * 64}, "config": {"decode": {"frames": 32},
                "method": {"method": "aot", "ratio": 0.1}}, "counts": {"frames": 32, "grid": [14, 14]},
                "versions": {"torch": "2.13", "aot": "0.1"}}
        for k in range(rows):
            writer.add(f"clips/{k:06d}.mp4", {"tokens": torch.zeros(1, 4)}, meta)
    size = sum(p.stat().st_size for p in (directory / "index").iterdir())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        cache = TokenCache(directory)
        times.append(time.perf_counter() - t0)
    assert len(cache) == rows
    return {"rows": rows, "index_bytes": size, "open_s": round(min(times), 4),
            "us_per_row": round(min(times) / rows * 1e6, 2)}


NO_INIT = """
import sys, time, types, json
from pathlib import Path
t0 = time.perf_counter()
package = types.ModuleType("aot_cli"); package.__path__ = [str(Path(sys.argv[2]) / "aot_cli")]
sys.modules["aot_cli"] = package
from aot_cli.cache import TokenCache
from aot_cli.inspect.stats import cache_stats
stats = cache_stats(TokenCache(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0, "torch": "torch" in sys.modules}))
"""


def process_times(path: Path, repeat: int = 5) -> dict:
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "inspect", str(path), "--json"],
                              capture_output=True, cwd=REPO)
        walls.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "aot_cli.cli", "inspect", str(path), "--json"],
                           capture_output=True, text=True, cwd=REPO)
    imported = {line.split("|")[-1].strip() for line in probe.stderr.splitlines() if "|" in line}
    reader = []
    torch_loaded = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(NO_INIT), str(path), str(REPO)],
                              capture_output=True, text=True)
        reader.append(time.perf_counter() - t0)
        torch_loaded = json.loads(proc.stdout)["torch"]
    return {"aot_inspect_json_wall_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3),
            "cli_imports_torch": "torch" in imported, "cli_imports_transformers": "transformers" in imported,
            "reader_path_process_wall_s": round(min(reader), 3), "reader_path_imports_torch": torch_loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20000, help="index rows for the open benchmark")
    args = parser.parse_args()
    report = {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="aot-readbench-") as tmp:
        work = Path(tmp)
        for label, count, tokens, dim in (("llava-ov-7b ratio 0.1", 40, 650, 3584), ("small", 200, 80, 896)):
            directory = build(work / label.replace(" ", "_"), count, tokens, dim)
            new, old = paired(directory, args.repeat)
            report[label] = {"videos": count, "tokens": [tokens, dim], "bytes_per_video": tokens * dim * 2,
                             "pread_ms_per_video": round(new / count * 1e3, 3),
                             "mmap_ms_per_video": round(old / count * 1e3, 3), "pread_over_mmap": round(new / old, 3)}
        report["open_index"] = index_open(work, args.rows)
        single = write_single(work / "one.safetensors", "clip.mp4", {"tokens": torch.zeros(65, 32),
                              "kind": torch.zeros(65, dtype=torch.uint8)}, {"counts": {"frames": 8}})
        report["inspect"] = process_times(single, args.repeat)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
