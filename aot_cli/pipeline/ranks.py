"""Which part of the inputs this process takes, and which GPU it uses.

Sources of a split, from the environment or the command line:

- explicit ``--num-shards N --shard-id I``;
- Slurm job arrays: ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (with
  ``SLURM_ARRAY_TASK_MIN`` / ``SLURM_ARRAY_TASK_STEP`` when the array does not start at 0 or steps);
- process launchers: ``torchrun`` and ``accelerate launch`` (``RANK`` / ``WORLD_SIZE``), else
  ``srun`` with several tasks (``SLURM_PROCID`` / ``SLURM_NTASKS``).

An outer split (explicit or Slurm array: one job per part) and an inner one (the processes of one
launcher) compose: part = outer_rank * inner_world + inner_rank. The assignment of a video to a
part is a hash of its id alone, so every process computes the same partition without talking to
the others, and a video's part does not depend on which other videos are in the input list.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    """This process's part: ``rank`` in ``0..world-1``; ``source`` says where it came from
    ("single", "explicit", "slurm-array", "torchrun", "srun", or two of them joined by "+");
    ``local_rank``: the launcher's per-node process number (None without a launcher)."""

    rank: int
    world: int
    source: str
    local_rank: Optional[int] = None

    @property
    def part(self) -> str:
        """Prefix of this process's index part and shard names in a cache directory."""
        return f"rank{self.rank:05d}-of-{self.world:05d}"


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _outer(num_shards: Optional[int], shard_id: Optional[int], env: Mapping[str, str]) -> Tuple[int, int, str]:
    """(rank, world, source) of the one-job-per-part split."""
    if num_shards is not None or shard_id is not None:
        if num_shards is None or shard_id is None:
            raise ValueError("--num-shards and --shard-id go together")
        if num_shards < 1:
            raise ValueError(f"--num-shards: must be at least 1, got {num_shards}")
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"--shard-id: must be in 0..{num_shards - 1} (with --num-shards {num_shards}), got {shard_id}")
        return int(shard_id), int(num_shards), "explicit"
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        step = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        offset = _int(env, "SLURM_ARRAY_TASK_ID") - first
        if step < 1 or offset % step:
            raise ValueError(f"SLURM_ARRAY_TASK_ID={env['SLURM_ARRAY_TASK_ID']} is not on the array's "
                             f"grid (min {first}, step {step})")
        return offset // step, _int(env, "SLURM_ARRAY_TASK_COUNT"), "slurm-array"
    return 0, 1, "single"


def _inner(env: Mapping[str, str]) -> Tuple[int, int, str, Optional[int]]:
    """(rank, world, source, local_rank) of the launcher's processes."""
    if "WORLD_SIZE" in env and "RANK" in env:
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else None
        return _int(env, "RANK"), _int(env, "WORLD_SIZE"), "torchrun", local
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and _int(env, "SLURM_NTASKS") > 1:
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else None
        return _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"), "srun", local
    return 0, 1, "single", None


def detect_rank(num_shards: Optional[int] = None, shard_id: Optional[int] = None,
                env: Optional[Mapping[str, str]] = None) -> RankInfo:
    """This process's part from ``--num-shards/--shard-id`` and the environment (``os.environ``
    unless ``env`` is given). ValueError (one line) for inconsistent settings."""
    env = os.environ if env is None else env
    o_rank, o_world, o_source = _outer(num_shards, shard_id, env)
    i_rank, i_world, i_source, local = _inner(env)
    for rank, world, source in ((o_rank, o_world, o_source), (i_rank, i_world, i_source)):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"part {rank} of {world} ({source}) is out of range")
    sources = [s for s in (o_source, i_source) if s != "single"] or ["single"]
    return RankInfo(o_rank * i_world + i_rank, o_world * i_world, "+".join(sources), local)


def owner(video_id: str, world: int) -> int:
    """The part that processes ``video_id``: a hash of the id, stable across runs and machines."""
    return int.from_bytes(hashlib.sha1(video_id.encode("utf-8", "surrogateescape")).digest()[:8], "big") % world


def take_share(items: Sequence[T], info: RankInfo, key=lambda it: it.video_id) -> List[T]:
    """The items whose id hashes to this part, in their original order."""
    return [it for it in items if owner(key(it), info.world) == info.rank]


def device_for_rank(device: str, info: RankInfo, cuda_count: int) -> str:
    """The device a process should use: with ``device == "auto"``, a launcher's local rank and
    ``cuda_count > 0`` GPUs, ``cuda:<local_rank mod cuda_count>``; otherwise ``device`` unchanged."""
    if device != "auto" or info.local_rank is None or cuda_count < 1:
        return device
    return f"cuda:{info.local_rank % cuda_count}"
