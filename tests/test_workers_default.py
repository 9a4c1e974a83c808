"""The default decode-worker count: this process's CPUs (affinity, cgroup quota, Slurm, launcher
ranks), less the main process's core with the tower on a GPU, one per 8 CPUs with it on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from aot_cli.pipeline.workers import (CPUS_PER_WORKER_ON_CPU, MAX_DEFAULT_WORKERS, CpuShare, cpu_share,
                                      default_workers, tower_on_cpu, usable_cpus)


@pytest.mark.parametrize("env, cpus, per_process, source", [
    ({}, 16, 16, "affinity"),
    ({"LOCAL_WORLD_SIZE": "8"}, 64, 8, "affinity/LOCAL_WORLD_SIZE"),  # torchrun: 8 ranks, one CPU set
    ({"SLURM_CPUS_PER_TASK": "8"}, 128, 8, "SLURM_CPUS_PER_TASK"),  # no binding: the mask shows the node
    ({"SLURM_CPUS_PER_TASK": "8", "SLURM_NTASKS_PER_NODE": "4"}, 128, 8, "SLURM_CPUS_PER_TASK"),  # own CPUs
    ({"SLURM_CPUS_PER_TASK": "64"}, 16, 16, "affinity"),  # the mask is narrower: it wins
    ({"SLURM_NTASKS_PER_NODE": "4"}, 32, 8, "affinity/SLURM_NTASKS_PER_NODE"),
    ({"SLURM_CPUS_PER_TASK": "32", "LOCAL_WORLD_SIZE": "4"}, 128, 8, "SLURM_CPUS_PER_TASK/LOCAL_WORLD_SIZE"),
    ({"LOCAL_WORLD_SIZE": "16"}, 8, 1, "affinity/LOCAL_WORLD_SIZE"),  # more ranks than CPUs: still 1
    ({"LOCAL_WORLD_SIZE": "abc", "SLURM_CPUS_PER_TASK": "0"}, 12, 12, "affinity"),  # unusable values ignored
])
def test_cpu_share(env, cpus, per_process, source):
    share = cpu_share(env, cpus=cpus)
    assert share.per_process == per_process and share.source == source


@pytest.mark.parametrize("per_process, gpu, cpu", [
    (1, 1, 1), (2, 1, 1), (4, 3, 1), (8, 7, 1), (16, 15, 2), (24, 23, 3), (33, 32, 4), (128, 32, 16),
])
def test_default_workers_by_device(per_process, gpu, cpu):
    share = CpuShare(per_process)
    assert default_workers(False, share) == gpu == max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))
    assert default_workers(True, share) == cpu == max(1, per_process // CPUS_PER_WORKER_ON_CPU)


def test_environment_reaches_the_default():
    """The process environment is what cpu_share reads by default."""
    assert cpu_share().per_process == cpu_share(dict(os.environ)).per_process
    assert default_workers(False) == default_workers(False, cpu_share(os.environ))


def test_usable_cpus_follow_the_affinity_mask():
    """A child pinned to one CPU counts one, and gets one worker on either device."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    first = min(os.sched_getaffinity(0))
    code = ("import json, os, sys; os.sched_setaffinity(0, {%d}); "
            "from aot_cli.pipeline.workers import usable_cpus, default_workers; "
            "print(json.dumps([usable_cpus(), default_workers(False), default_workers(True)]))" % first)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_WORLD_SIZE", "SLURM_CPUS_PER_TASK",
                                                             "SLURM_NTASKS_PER_NODE", "LOKY_MAX_CPU_COUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [1, 1, 1]
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_tower_device():
    assert tower_on_cpu("cpu") is True
    assert tower_on_cpu("cuda") is False and tower_on_cpu("cuda:1") is False and tower_on_cpu("mps") is False
    assert tower_on_cpu("auto") is (not torch.cuda.is_available())


def test_compress_and_run_batch_use_the_default_for_the_tower_device(tmp_path, monkeypatch):
    """`aot compress --device cpu` without --decode-workers, and run_batch(decode_workers=None) with
    a CPU adapter, ask for the default of a CPU tower; an explicit count is used as given."""
    from pathlib import Path

    from click.testing import CliRunner

    import aot_cli.pipeline.batch as batch
    import aot_cli.pipeline.workers as workers
    from aot_cli.cli import main
    from checkpoints import build_llava_hf

    asked = []

    def spy(on_cpu, share=None):
        asked.append(on_cpu)
        return 0  # decode in this process: the test needs no worker processes

    monkeypatch.setattr(workers, "default_workers", spy)
    monkeypatch.setattr(batch, "default_workers", spy)
    clip = Path(__file__).resolve().parent.parent / "samples" / "realshort.mp4"
    model = build_llava_hf(tmp_path / "llava")
    args = ["compress", str(clip), "--model", str(model), "--frames", "2", "--dtype", "fp32", "--device", "cpu", "-q"]
    result = CliRunner().invoke(main, args + ["-o", str(tmp_path / "a")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert asked == [True]
    result = CliRunner().invoke(main, args + ["-o", str(tmp_path / "b"), "--decode-workers", "0"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert asked == [True]  # not asked when the flag gives the count

    from aot_cli.config import DecodeConfig, ModelConfig
    from aot_cli.models import load_model
    from aot_cli.pipeline.inputs import VideoInput
    from aot_cli.pipeline.run import RunConfig

    cfg = RunConfig(decode=DecodeConfig(frames=2), model=ModelConfig(model=str(model), device="cpu", dtype="fp32"))
    adapter = load_model(cfg.model)
    summary = batch.run_batch([VideoInput(clip, "clip")], tmp_path / "c", cfg, adapter=adapter)
    assert summary.done == 1 and asked == [True, True]
