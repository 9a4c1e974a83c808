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
