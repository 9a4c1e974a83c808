"""Which part of the inputs this process takes: torchrun / accelerate (``RANK``/``WORLD_SIZE``),
Slurm job arrays (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``), or explicit
``--num-shards/--shard-id``. The split is a deterministic function of the video id alone, so every
rank computes the same partition without talking to the others."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int
    source: str  # "single" | "explicit" | "torchrun" | "slurm-array"

    @property
    def part(self) -> str:
        return f"rank{self.rank:05d}-of-{self.world:05d}"


def detect_rank(num_shards: Optional[int] = None, shard_id: Optional[int] = None,
                env: Optional[Mapping[str, str]] = None) -> RankInfo:
    env = os.environ if env is None else env
    if num_shards is not None or shard_id is not None:
        if num_shards is None or shard_id is None:
            raise ValueError("--num-shards and --shard-id go together")
        info = RankInfo(int(shard_id), int(num_shards), "explicit")
    elif "WORLD_SIZE" in env and "RANK" in env:
        info = RankInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun")
    elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        info = RankInfo(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]), "slurm-array")
    else:
        info = RankInfo(0, 1, "single")
    if info.world < 1 or not 0 <= info.rank < info.world:
        raise ValueError(f"shard {info.rank} of {info.world} ({info.source}) is out of range")
    return info


def owner(video_id: str, world: int) -> int:
    """The rank that processes ``video_id``: a hash of the id, stable across runs and machines."""
    return int.from_bytes(hashlib.sha1(video_id.encode("utf-8")).digest()[:8], "big") % world


def take_share(items: Sequence[T], info: RankInfo, key=lambda it: it.video_id) -> List[T]:
    return [it for it in items if owner(key(it), info.world) == info.rank]
