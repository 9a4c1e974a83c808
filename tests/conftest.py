"""Shared fixtures: tiny random checkpoints (built by ``checkpoints.py``), once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

import checkpoints


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """SiglipVisionModel, 126 px, patch 14 (9x9 grid), hidden 32, 6 layers."""
    return checkpoints.build_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """CLIPVisionModel, 126 px, patch 14 (9x9 grid), hidden 32, 7 layers (6 run)."""
    return checkpoints.build_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory) -> Path:
    """Dinov2Model, shortest edge 144, crop 126 (9x9 grid), hidden 32, 6 layers."""
    return checkpoints.build_dinov2(tmp_path_factory.mktemp("tiny-dinov2"))


@pytest.fixture(scope="session")
def tiny_llava_hf_dir(tmp_path_factory) -> Path:
    """LLaVA-OneVision in the transformers format, sharded; 9x9 grid, output width 48."""
    return checkpoints.build_llava_hf(tmp_path_factory.mktemp("tiny-llava-hf"))


@pytest.fixture(scope="session")
def tiny_llava_next_dir(tmp_path_factory) -> Path:
    """The same weights as ``tiny_llava_hf_dir`` in the LLaVA-NeXT (lmms-lab) layout."""
    return checkpoints.build_llava_next(tmp_path_factory.mktemp("tiny-llava-next"))


@pytest.fixture
def nothing_runs(monkeypatch):
    """Records any model load or decode-worker start (a test that expects none asserts it is empty)."""
    calls = []
    import aot_cli.models
    from aot_cli.pipeline.workers import DecodePool

    real_load, real_start = aot_cli.models.load_model, DecodePool.start
    monkeypatch.setattr(aot_cli.models, "load_model", lambda *a, **k: calls.append("load_model") or real_load(*a, **k))
    monkeypatch.setattr(DecodePool, "start", lambda self: calls.append("workers") or real_start(self))
    return calls
