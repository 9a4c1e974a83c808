"""The ray engine against the local engine on the same videos, and Ray Data against the engine's own
actor scheduling.

    python benchmarks/ray_engine.py [--videos samples/] [--copies 2] [--model dinov2-small-offline]
                                    [--frames 8] [--repeat 2] [--json out.json]
    python benchmarks/ray_engine.py --scheduling-only [--items 200]

Part 1, end to end: every setting runs the real command (`python -m aot_cli.cli compress`, a
fresh output each time) twice, on all N videos and on one of them, alternating settings within
each repeat; the median wall time of each is kept. From those:

- ``videos_per_s``: N / wall(N), the whole command (start-up included);
- ``steady_videos_per_s``: (N - 1) / (wall(N) - wall(1)), start-up excluded;
- ``startup_s``: wall(1) of the setting minus wall(1) of the local engine (Ray's start, actors,
  their model loads, the end of Ray);
- ``overhead_per_video_s``: the steady per-video time minus the local engine's.

Settings: ``local`` and ``ray-actor-1`` / ``ray-actor-2`` (one or two actors) all decode in the
process that runs the tower (``--decode-workers 0``: like for like, and on a 2-core machine a decode
process costs a core the tower needs); ``ray-tasks-2``: two actors, decoding in Ray CPU tasks.

Part 2, scheduling alone (no model, no video): the private Ray's start, connection and end, then N
trivial items through (a) the engine's way, one small call per item to whichever of A actors is
free, and (b) Ray Data, ``map_batches`` with an actor class over A actors and batch size 1; seconds
to the first result and per item, in one Ray session. Needs ``ray[data]`` (pandas, pyarrow) for (b).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from batch import make_dataset  # noqa: E402

SETTINGS: Dict[str, List[str]] = {
    "local": ["--decode-workers", "0"],
    "ray-actor-1": ["--engine", "ray", "--ray-actors", "1", "--decode-workers", "0"],
    "ray-actor-2": ["--engine", "ray", "--ray-actors", "2", "--decode-workers", "0"],
    "ray-tasks-2": ["--engine", "ray", "--ray-actors", "2", "--ray-decode", "tasks", "--decode-workers", "1"],
}


def timed_run(inputs: List[str], out: Path, common: List[str], extra: List[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "compress", *inputs, "-o", str(out), *common, *extra,
                           "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{extra}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return wall


def end_to_end(args) -> Dict[str, Dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="aot-raybench-"))
    try:
        data = work / "videos"
        data.mkdir()
        n = make_dataset(Path(args.videos), args.copies, data)
        one = sorted(data.iterdir())[0]
        common = ["--model", args.model, "--frames", str(args.frames), "--flush-every", "0"]
        walls: Dict[str, Dict[str, List[float]]] = {s: {"all": [], "one": []} for s in args.settings}
        for rep in range(args.repeat):
            for name in args.settings:
                walls[name]["all"].append(timed_run([str(data)], work / f"out-{name}", common, SETTINGS[name]))
                walls[name]["one"].append(timed_run([str(one)], work / f"one-{name}", common, SETTINGS[name]))
                print(f"repeat {rep}: {name}: {walls[name]['all'][-1]:.1f} s for {n}, {walls[name]['one'][-1]:.1f} s "
                      "for 1", file=sys.stderr, flush=True)
        med = {s: {k: statistics.median(v) for k, v in w.items()} for s, w in walls.items()}
        base = med.get("local", next(iter(med.values())))
        base_per_video = (base["all"] - base["one"]) / (n - 1)
        rows = {}
        for name, m in med.items():
            per_video = (m["all"] - m["one"]) / (n - 1)
            rows[name] = {"videos": n, "wall_all_s": round(m["all"], 2), "wall_one_s": round(m["one"], 2),
                          "videos_per_s": round(n / m["all"], 3),
                          "steady_videos_per_s": round(1 / per_video, 3) if per_video > 0 else None,
                          "startup_s": round(m["one"] - base["one"], 2),
                          "overhead_per_video_s": round(per_video - base_per_video, 3),
                          "runs": walls[name]}
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Echo:
    """A trivial actor: one call per item (the engine's way)."""

    def process(self, item):
        return item


class _EchoBatch:
    """The same work as a Ray Data UDF."""

    def __call__(self, batch):
        return batch


def scheduling(items: int, actors: int) -> Dict[str, Dict[str, float]]:
    import ray

    from aot_cli.pipeline.ray_local import PrivateRay

    rows = {}
    t0 = time.perf_counter()
    with PrivateRay(2) as private:
        started = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(address="auto", _temp_dir=private.temp_dir, log_to_driver=False)
        rows["private_ray"] = {"start_s": round(started, 2), "connect_s": round(time.perf_counter() - t0, 2)}
        try:
            # (a) the engine's way: one call in flight per actor, to whichever is free
            t0 = time.perf_counter()
            pool = [ray.remote(num_cpus=0)(_Echo).remote() for _ in range(actors)]
            free, inflight, first, left = list(pool), {}, None, list(range(items))
            while left or inflight:
                while free and left:
                    actor = free.pop()
                    inflight[actor.process.remote(left.pop())] = actor
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    ray.get(ref)
                    free.append(inflight.pop(ref))
                    first = first or time.perf_counter() - t0
            total = time.perf_counter() - t0
            rows["actors"] = {"first_result_s": round(first, 3), "total_s": round(total, 3),
                              "per_item_ms": round(1000 * (total - first) / max(1, items - 1), 3)}
            for actor in pool:
                ray.kill(actor)
            # (b) Ray Data: map_batches over an actor pool, one item per batch
            try:
                import ray.data
            except ImportError as exc:
                rows["ray_data"] = {"error": f"needs ray[data]: {exc}"}
                return rows
            t0 = time.perf_counter()
            ds = ray.data.from_items([{"item": i} for i in range(items)]).map_batches(
                _EchoBatch, batch_size=1, concurrency=actors, num_cpus=0.5)
            first = None
            for _ in ds.iter_rows():
                first = first or time.perf_counter() - t0
            total = time.perf_counter() - t0
            rows["ray_data"] = {"first_result_s": round(first, 3), "total_s": round(total, 3),
                                "per_item_ms": round(1000 * (total - first) / max(1, items - 1), 3)}
        finally:
            ray.shutdown()
            t0 = time.perf_counter()
    rows["private_ray"]["stop_s"] = round(time.perf_counter() - t0, 2)  # every Ray process ended
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", default=str(ROOT / "samples"))
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--model", default="dinov2-small-offline")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--items", type=int, default=200, help="items of the scheduling comparison")
    parser.add_argument("--actors", type=int, default=2, help="actors of the scheduling comparison")
    parser.add_argument("--scheduling-only", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    result = {"machine": {"cpus": len(os.sched_getaffinity(0)), "load_1min": round(os.getloadavg()[0], 2)}}
    if not args.scheduling_only:
        result["end_to_end"] = end_to_end(args)
        print(f"{'setting':<12} {'videos/s':>9} {'steady/s':>9} {'startup s':>10} {'overhead s/video':>17}")
        for name, row in result["end_to_end"].items():
            print(f"{name:<12} {row['videos_per_s']:>9} {row['steady_videos_per_s']!s:>9} {row['startup_s']:>10} "
                  f"{row['overhead_per_video_s']:>17}")
    result["scheduling"] = scheduling(args.items, args.actors)
    for name, row in result["scheduling"].items():
        print(f"scheduling {name}: {row}")
    result["machine"]["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
