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


def pytest_addoption(parser) -> None:
    parser.addoption("--expect-pyav", default=None, metavar="MAJOR",
                     help="fail test_pyav_version_is_the_expected_one unless PyAV's major version is MAJOR "
                          "(CI runs the decoding tests under PyAV 15 and 18)")


# Tiny random Qwen-family checkpoints (built by ``qwen_checkpoints.py``), once per session.

@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_dir(tmp_path_factory) -> Path:
    """Qwen2.5-VL: patch 14, window attention (2x2 merged cells) but blocks 1 and 3; sharded with an
    index (the other two families are single-file)."""
    import qwen_checkpoints

    return qwen_checkpoints.build_qwen(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), "qwen2.5-vl",
                                       max_shard_size="200KB")


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(tmp_path_factory) -> Path:
    """Qwen3-VL: patch 16, per-frame attention, DeepStack from blocks 1 and 2."""
    import qwen_checkpoints

    return qwen_checkpoints.build_qwen(tmp_path_factory.mktemp("tiny-qwen3-vl"), "qwen3-vl")


@pytest.fixture(scope="session")
def tiny_qwen3_5_dir(tmp_path_factory) -> Path:
    """Qwen3.5: patch 16, per-frame attention, no DeepStack; hybrid linear/full-attention LLM."""
    import qwen_checkpoints

    return qwen_checkpoints.build_qwen(tmp_path_factory.mktemp("tiny-qwen3.5"), "qwen3.5")


@pytest.fixture(params=["qwen2.5-vl", "qwen3-vl", "qwen3.5"])
def tiny_qwen_dir(request) -> Path:
    """Each tiny Qwen-family checkpoint in turn (``request.param`` is the family name)."""
    name = {"qwen2.5-vl": "tiny_qwen2_5_vl_dir", "qwen3-vl": "tiny_qwen3_vl_dir", "qwen3.5": "tiny_qwen3_5_dir"}
    return request.getfixturevalue(name[request.param])
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


@pytest.fixture(scope="session")
def qwen_caches(request, tmp_path_factory):
    """``qwen_caches(family)`` -> :class:`qwen_caches.QwenCaches`: the sample clips compressed by
    ``aot compress`` with the family's tiny checkpoint (``--method none --ratio 1.0`` and
    ``--ratio 0.1``), made once per session on first use."""
    import qwen_caches as qcache

    made = {}

    def get(family: str):
        if family not in made:
            checkpoint = request.getfixturevalue(qcache.CHECKPOINT_FIXTURES[family])
            made[family] = qcache.build_caches(tmp_path_factory.mktemp(f"caches-{family}"), family, checkpoint)
        return made[family]

    return get
