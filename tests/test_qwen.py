"""Qwen2.5-VL / Qwen3-VL / Qwen3.5 towers on tiny random checkpoints (tests/qwen_checkpoints.py):
preprocessing against the processors' rules, tokens against the model's own get_video_features,
scores against eager attention, exact budgets, and caches written by ``aot compress``."""
from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.models import load_model
from aot_cli.models.qwen_preprocess import (QwenDecodeTarget, QwenVideoSpec, patchify, spec_from_processor_config,
                                            video_pixels)

import qwen_checkpoints as qc
from qwen_caches import decode_native

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "samples" / "bikes.mp4"


def family_of(request) -> str:
    return request.node.callspec.params["tiny_qwen_dir"]


@pytest.fixture(scope="module")
def adapters(tiny_qwen2_5_vl_dir, tiny_qwen3_vl_dir, tiny_qwen3_5_dir):
    dirs = {"qwen2.5-vl": tiny_qwen2_5_vl_dir, "qwen3-vl": tiny_qwen3_vl_dir, "qwen3.5": tiny_qwen3_5_dir}
    return {f: load_model(ModelConfig(model=str(d), dtype="fp32", device="cpu")) for f, d in dirs.items()}


@pytest.fixture(scope="module")
def hf_models(tiny_qwen2_5_vl_dir, tiny_qwen3_vl_dir, tiny_qwen3_5_dir):
    from transformers import AutoModelForImageTextToText

    dirs = {"qwen2.5-vl": tiny_qwen2_5_vl_dir, "qwen3-vl": tiny_qwen3_vl_dir, "qwen3.5": tiny_qwen3_5_dir}
    return {f: AutoModelForImageTextToText.from_pretrained(d, dtype=torch.float32).eval() for f, d in dirs.items()}


def random_frames(count, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (1, height, width, 3), generator=g)
    noise = torch.randint(-40, 41, (count, height, width, 3), generator=g)
    return (base + noise).clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- preprocessing: the processors' rules

def tiny_spec(family: str) -> QwenVideoSpec:
    data = qc.processor_configs(family)["video_preprocessor_config.json"]
    return spec_from_processor_config(data, "frame" if family == "qwen2.5-vl" else "video", "tiny")


@pytest.mark.parametrize("height,width,frames,want", [
    (480, 640, 8, (168, 252)),   # over the budget: scaled down, floor to multiples of 28
    (270, 480, 3, (168, 280)),
    (37, 211, 5, (28, 224)),     # nearest multiples of 28, inside the budget
    (20, 30, 2, (56, 84)),       # under the minimum: scaled up, ceil to multiples of 28
    (1080, 1920, 1, (168, 280)),
])
def test_qwen25_frame_size_follows_smart_resize(height, width, frames, want):
    spec = tiny_spec("qwen2.5-vl")  # per frame: 4..64 cells of 28x28 px
    got = spec.frame_size(frames, height, width)
    assert got == want
    h, w = got
    assert h % 28 == 0 and w % 28 == 0 and spec.shortest_edge <= h * w <= spec.longest_edge
    assert spec.grid_thw(frames, height, width) == (math.ceil(frames / 2), h // 14, w // 14)


@pytest.mark.parametrize("height,width,frames", [(480, 640, 8), (480, 640, 16), (270, 480, 7), (37, 211, 5),
                                                  (20, 300, 4), (1080, 1920, 31)])
def test_qwen3_frame_size_budget_counts_every_frame(height, width, frames):
    spec = tiny_spec("qwen3-vl")  # the whole video: at most 16 frames x 64 cells of 32x32 px
    h, w = spec.frame_size(frames, height, width)
    assert h % 32 == 0 and w % 32 == 0 and h >= 32 and w >= 32
    t_bar = round(frames / 2) * 2
    scale_h, scale_w = max(height, 32) / h, width / w
    if t_bar * round(height / 32) * 32 * round(width / 32) * 32 > spec.longest_edge:
        assert t_bar * h * w <= spec.longest_edge * 1.0001 or (h == 32 or w == 32)
    assert abs(math.log(scale_h / scale_w)) < 0.5  # aspect ratio kept within the rounding
    if frames == 16:  # twice the frames of the 8-frame case: about half the pixels per frame
        h8, w8 = spec.frame_size(8, height, width)
        assert h * w < h8 * w8


def test_pixels_and_patch_order_equal_the_image_processor():
    """A frame already at a valid size: our pixels, patchified, equal the slow image processor's
    pixel_values for that image (the processor repeats an image over the temporal patch)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    for family in ("qwen2.5-vl", "qwen3-vl"):
        spec = tiny_spec(family)
        f = spec.factor
        frame = random_frames(1, 2 * f, 3 * f, seed=3)
        pixels = video_pixels(frame, spec, torch.device("cpu"), torch.float32)
        assert pixels.shape == (2, 3, 2 * f, 3 * f) and torch.equal(pixels[0], pixels[1])  # odd count: repeated
        ours, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
        processor = Qwen2VLImageProcessorPil(
            do_resize=False, patch_size=spec.patch_size, merge_size=spec.merge_size,
            temporal_patch_size=spec.temporal_patch_size, image_mean=list(spec.mean), image_std=list(spec.std))
        ref = processor(images=[frame[0].numpy()], return_tensors="pt")
        assert thw == tuple(ref["image_grid_thw"][0].tolist())
        assert torch.allclose(ours, ref["pixel_values"].float(), atol=1e-5)


def test_resize_is_antialiased_bicubic_like_the_processor():
    """Resizing (odd size to the rule's size) stays within a couple of grey levels of PIL's
    antialiased bicubic, which the slow image processor uses (the video processors use torch's)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    spec = tiny_spec("qwen2.5-vl")
    yy, xx = torch.meshgrid(torch.arange(203), torch.arange(331), indexing="ij")
    smooth = torch.stack([(xx * 255 / 330), (yy * 255 / 202), ((xx + yy) % 255)], dim=-1).to(torch.uint8)[None]
    pixels = video_pixels(smooth, spec, torch.device("cpu"), torch.float32)
    ours, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    processor = Qwen2VLImageProcessorPil(min_pixels=spec.shortest_edge, max_pixels=spec.longest_edge,
                                         patch_size=14, merge_size=2, temporal_patch_size=2,
                                         image_mean=list(spec.mean), image_std=list(spec.std))
    ref = processor(images=[smooth[0].numpy()], return_tensors="pt")
    assert thw == tuple(ref["image_grid_thw"][0].tolist())
    grey_level = 1 / 255 / min(spec.std)
    assert float((ours - ref["pixel_values"].float()).abs().mean()) < 1.0 * grey_level


def test_odd_frame_counts_repeat_the_last_frame():
    spec = tiny_spec("qwen3-vl")
    frames = random_frames(5, 70, 90)
    pixels = video_pixels(frames, spec, torch.device("cpu"), torch.float32)
    assert pixels.shape[0] == 6 and torch.equal(pixels[5], pixels[4]) and not torch.equal(pixels[4], pixels[3])
    assert spec.grid_thw(5, 70, 90)[0] == 3


# ---------------------------------------------------------------- the tower against the model itself

@pytest.mark.parametrize("shape", [(6, 70, 100), (3, 150, 64)])
def test_tokens_equal_get_video_features(tiny_qwen_dir, request, adapters, hf_models, shape):
    family = family_of(request)
    adapter, model = adapters[family], hf_models[family]
    pixels = adapter.preprocess(random_frames(*shape))
    out = adapter.encode(pixels)
    spec = adapter.video_spec
    patches, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    with torch.no_grad():
        ref = model.model.get_video_features(pixel_values_videos=patches, video_grid_thw=torch.tensor([thw]))
    t, gh, gw = thw
    assert out.grid == (gh // 2, gw // 2) and out.tokens.shape == (t, gh * gw // 4, qc.TEXT_HIDDEN)
    assert torch.allclose(out.tokens.reshape(-1, qc.TEXT_HIDDEN), ref.pooler_output[0], atol=1e-5)
    if family == "qwen3-vl":
        want = torch.cat([f[0] for f in ref.deepstack_features], dim=-1)
        assert out.side["deepstack"].shape == (t, gh * gw // 4, 2 * qc.TEXT_HIDDEN)
        assert torch.allclose(out.side["deepstack"].reshape(len(want), -1), want, atol=1e-5)
    else:
        assert out.side == {}


def eager_cell_scores(model, block: int, pixels, spec, family):
    """Received attention of ``block`` computed from scratch (eager softmax of the block's own q, k
    with the model's rotary embedding, per cu_seqlens segment, float64), summed over queries,
    mean over heads, then summed over each merged cell's patches found from the rotary positions."""
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    visual = model.model.visual
    patches, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    grid_thw = torch.tensor([thw])
    seen = {}

    def grab(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["cu"] = kwargs["cu_seqlens"]
        seen["pos"] = kwargs["position_embeddings"]

    handle = visual.blocks[block].attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        visual(patches, grid_thw=grid_thw)
    handle.remove()
    attn = visual.blocks[block].attn
    module = __import__(type(attn).__module__, fromlist=["apply_rotary_pos_emb_vision"])
    hidden = seen["hidden"]
    n = hidden.shape[0]
    q, k, _ = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = seen["pos"]
    q, k = module.apply_rotary_pos_emb_vision(q, k, cos, sin)
    received = torch.zeros(n, dtype=torch.float64)
    cu = seen["cu"].tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        logits = torch.einsum("qhd,khd->hqk", q[a:b].double(), k[a:b].double()) * attn.scaling
        received[a:b] = torch.softmax(logits, dim=-1).sum(dim=1).mean(dim=0)
    t, gh, gw = thw
    pos = get_vision_position_ids(grid_thw, spec.merge_size)  # (row, col) of each patch, block order
    if family == "qwen2.5-vl":
        config = visual.config
        window, _ = get_vision_window_index(grid_thw, config.spatial_merge_size, config.window_size, config.patch_size)
        pos = pos.reshape(-1, 4, 2)[window].reshape(-1, 2)
        frame = (window.repeat_interleave(4) // (gh * gw // 4))
    else:
        frame = torch.arange(n) // (gh * gw)
    cell = (pos[:, 0] // 2) * (gw // 2) + pos[:, 1] // 2
    out = torch.zeros(t, gh * gw // 4, dtype=torch.float64)
    out.index_put_((frame, cell), received, accumulate=True)
    return out


def test_scores_equal_eager_attention_maps(tiny_qwen_dir, request, adapters, hf_models):
    family = family_of(request)
    adapter, model = adapters[family], hf_models[family]
    pixels = adapter.preprocess(random_frames(4, 150, 200, seed=5))  # qwen2.5: several windows per frame
    shallow_i, deep_i = adapter.resolve_score_layers()
    out = adapter.encode(pixels)
    for got, block in ((out.shallow, shallow_i), (out.deep, deep_i)):
        want = eager_cell_scores(model, block, pixels, adapter.video_spec, family)
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)
    if family == "qwen2.5-vl":  # the full-attention blocks only
        assert (shallow_i, deep_i) == (1, 3)
        with pytest.raises(Exception, match="attends inside windows"):
            adapter.encode(pixels, score_layers=(0, 3))


# ---------------------------------------------------------------- exact budgets

_ENCODED = {}  # family -> tower output of the budget tests' video


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2])
def test_exact_budgets_on_the_merged_grid(tiny_qwen_dir, request, adapters, ratio):
    from aot_cli.core import AOTConfig
    from aot_cli.pipeline.run import RunConfig, grid_order, method_with_side, resolve_method

    family = family_of(request)
    adapter = adapters[family]
    if family not in _ENCODED:
        _ENCODED[family] = adapter.encode(adapter.preprocess(random_frames(8, 150, 200, seed=11)))
    out = _ENCODED[family]
    t, gh, gw = adapter.video_spec.grid_thw(8, 150, 200)
    want = math.floor(ratio * t * (gh // 2) * (gw // 2) + 0.5)
    for method in (AOTConfig(ratio=ratio), AOTConfig.preset("quality", ratio=ratio),
                   AOTConfig(method="random", ratio=ratio), AOTConfig(method="pool", ratio=ratio),
                   AOTConfig(method="attention", ratio=ratio)):
        resolved = resolve_method(RunConfig(method=method), adapter.profile)
        assert resolved.pooling is None and resolved.clip_length == 4
        assert resolved.keyframe_once == (method.method == "aot" and method.preset == "reference")
        res, side = method_with_side(out.tokens, out.shallow, out.deep, out.grid, out.side, resolved)
        assert len(res) == want, (method.method, method.preset)
        key = (res.frame * out.grid[0] * out.grid[1] + res.index)[grid_order(res)]
        assert torch.all(key[1:] > key[:-1])  # one token per cell, in sequence order after sorting
        if out.side:
            assert side["deepstack"].shape == (want, out.side["deepstack"].shape[-1])


# ---------------------------------------------------------------- aot compress on a real clip

def only(path):
    """The one video of a single-video cache file."""
    from aot_cli.cache import TokenCache

    cache = TokenCache(path)
    (video_id,) = cache.ids()
    return cache[video_id]


def run_cli(*args):
    from click.testing import CliRunner

    from aot_cli.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_compress_caches_match_the_model(tiny_qwen_dir, request, hf_models, tmp_path):
    family = family_of(request)
    model = hf_models[family]
    full, pruned = tmp_path / "full.safetensors", tmp_path / "pruned.safetensors"
    common = ["--model", tiny_qwen_dir, "--frames", 7, "--device", "cpu", "--dtype", "fp32"]
    code, text = run_cli("compress", CLIP, "-o", full, "--method", "none", "--ratio", "1.0", *common)
    assert code == 0, text
    code, text = run_cli("compress", CLIP, "-o", pruned, "--method", "random", "--ratio", "0.1", *common)
    assert code == 0, text

    entry = only(full)
    tensors = entry.tensors()
    t, gh, gw = tensors["video_grid_thw"].tolist()
    assert t == 4 and len(tensors["frame_indices"]) == 7  # odd count: the processor repeats the last frame
    assert entry.meta["processor"]["padded_frames"] == 1 and entry.meta["model"]["family"] == family
    frames = decode_native(CLIP, tensors["frame_indices"].tolist(), entry.meta["sampling"]["decode_size"])
    spec = tiny_spec(family)
    pixels = video_pixels(frames, spec, torch.device("cpu"), torch.float32)
    patches, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    assert thw == (t, gh, gw)
    with torch.no_grad():
        ref = model.model.get_video_features(pixel_values_videos=patches, video_grid_thw=torch.tensor([thw]))
    cells = gh * gw // 4
    assert tensors["frame"].tolist() == [f for f in range(t) for _ in range(cells)]
    assert tensors["index"].tolist() == list(range(cells)) * t
    assert torch.allclose(tensors["tokens"], ref.pooler_output[0], atol=1e-5)
    deepstack = torch.stack([f[0] for f in ref.deepstack_features]) if family == "qwen3-vl" else None
    if deepstack is not None:
        assert torch.allclose(tensors["deepstack"], deepstack, atol=1e-5)
    else:
        assert "deepstack" not in tensors

    kept = only(pruned).tensors()
    rows = (kept["frame"] * cells + kept["index"]).long()
    assert len(rows) == math.floor(0.1 * t * cells + 0.5) and torch.all(rows[1:] > rows[:-1])
    assert torch.allclose(kept["tokens"], ref.pooler_output[0][rows], atol=1e-5)
    if deepstack is not None:
        assert kept["deepstack"].shape == (2, len(rows), qc.TEXT_HIDDEN)
        assert torch.allclose(kept["deepstack"], deepstack[:, rows], atol=1e-5)

    code, text = run_cli("inspect", pruned)
    assert code == 0 and family in text


def test_aot_cache_is_ordered_and_deepstack_follows_the_merge(tiny_qwen3_vl_dir, tmp_path):
    out = tmp_path / "aot.safetensors"
    code, text = run_cli("compress", CLIP, "-o", out, "--model", tiny_qwen3_vl_dir, "--frames", 8, "--ratio", 0.2,
                         "--device", "cpu", "--dtype", "fp32")
    assert code == 0, text
    entry = only(out)
    tensors = entry.tensors()
    assert entry.meta["config"]["method"]["keyframe_once"] is True and entry.meta["token_order"] == "grid"
    cells = int(np.prod(entry.meta["counts"]["grid"]))
    key = (tensors["frame"] * cells + tensors["index"]).long()
    assert torch.all(key[1:] > key[:-1])
    assert tensors["deepstack"].shape == (2, *tensors["tokens"].shape)
    assert torch.isfinite(tensors["deepstack"]).all()
    # pictures: one per temporal patch, shown by its first sampled frame
    sheet, plot = tmp_path / "sheet.png", tmp_path / "plot.png"
    code, text = run_cli("inspect", out, "--overlay", sheet)
    assert code == 0 and "4 frames" in text and sheet.stat().st_size > 0, text
    code, text = run_cli("inspect", out, "--plot", plot)
    assert code == 0 and plot.stat().st_size > 0, text


def test_identity_before_loading_equals_the_loaded_adapters(tiny_qwen_dir, adapters, request):
    """The configuration fingerprint's model identity (read from config files, before loading)
    equals the loaded adapter's, so a rerun skips what is cached."""
    from aot_cli.models.loader import adapter_identity, model_identity
    from aot_cli.models.peek import peek_checkpoint
    from aot_cli.models.source import resolve_source

    cfg = ModelConfig(model=str(tiny_qwen_dir), dtype="fp32", device="cpu")
    adapter = adapters[family_of(request)]
    assert model_identity(cfg) == adapter_identity(adapter)
    peeked = peek_checkpoint(resolve_source(cfg.model), cfg)
    assert peeked.grid is None and peeked.profile.name == adapter.profile.name == family_of(request)
    assert model_identity(cfg)["profile"]["keyframe_once"] is True
    # only the vision tower's tensors were read, never the language model's
    assert adapter.tensors_read and all(".visual." in f".{name}" for name in adapter.tensors_read)


@pytest.mark.parametrize("flags,message", [
    (["--pooling", "bilinear"], "2x2-merged cells"),
    (["--profile", "llava-video"], "only fit their own family"),
    (["--score-layers", "0,3"], "attends inside windows"),
    (["--profile", "qwen2.5-vl", "--pooling", "average"], "2x2-merged cells"),
])
def test_qwen_flag_checks(tiny_qwen2_5_vl_dir, tmp_path, flags, message):
    out = tmp_path / "x.safetensors"
    code, text = run_cli("compress", CLIP, "-o", out, "--model", tiny_qwen2_5_vl_dir, "--device", "cpu", *flags)
    assert code == 2 and message in text and "Traceback" not in text
    assert not out.exists()


# ---------------------------------------------------------------- decoding at the tower's size

#: Released checkpoints' video budgets (Qwen2.5-VL's per frame, Qwen3-VL's per video).
RELEASED_SPECS = {
    "qwen2.5-vl": spec_from_processor_config({"size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}},
                                             "frame", "released"),
    "qwen3-vl": spec_from_processor_config({"size": {"shortest_edge": 4096, "longest_edge": 25165824}},
                                           "video", "released"),
}


@pytest.mark.parametrize("spec_name", ["tiny qwen2.5-vl", "tiny qwen3-vl", "released qwen2.5-vl", "released qwen3-vl"])
def test_decode_size_gives_the_processors_grid_for_the_native_size(spec_name):
    """Odd native sizes and frame counts: the size frames are decoded at (about twice the
    processor's size, never above native) gives the same processor grid as the native size."""
    from aot_cli.video.decode import decode_size

    origin, family = spec_name.split()
    spec = tiny_spec(family) if origin == "tiny" else RELEASED_SPECS[family]
    shrunk = 0
    for height, width in [(2161, 3839), (4321, 7681), (1081, 1921), (719, 1283), (577, 1025), (3001, 211),
                          (1283, 719), (2160, 3840), (271, 641)]:
        for frames in (1, 2, 5, 7, 16, 31, 64):
            target = QwenDecodeTarget(spec, frames)
            h, w = decode_size(height, width, target)
            assert h <= height and w <= width
            assert spec.grid_thw(frames, h, w) == spec.grid_thw(frames, height, width), (height, width, frames, h, w)
            th, tw = spec.frame_size(frames, height, width)
            if (h, w) != (height, width):
                shrunk += 1
                assert h >= min(height, 2 * th - 2) and w >= min(width, 2 * tw - 2)  # about twice, aspect kept
    assert shrunk > 10  # the rule is exercised, not only the native fallback


def test_decode_target_follows_the_frame_count(adapters):
    """The hook the pipeline uses: native size by default (the processor's own input); with
    --decode-size tower the count of --frames (else the profile's), none under --fps for the
    per-video budgets (the count is not known before decoding), picklable."""
    from aot_cli.pipeline.workers import decode_target

    for family, adapter in adapters.items():
        spec = adapter.video_spec
        assert decode_target(adapter, DecodeConfig(frames=7)) is None  # auto: native, as the processor
        assert decode_target(adapter, DecodeConfig(frames=7, size="native")) is None
        target = decode_target(adapter, DecodeConfig(frames=7, size="tower"))
        assert target(1081, 1921) == spec.frame_size(7, 1081, 1921)
        assert pickle.loads(pickle.dumps(target))(1081, 1921) == target(1081, 1921)
        default = decode_target(adapter, DecodeConfig(size="tower"))
        assert default(2160, 3840) == spec.frame_size(adapter.profile.default_frames, 2160, 3840)
        by_rate = decode_target(adapter, DecodeConfig(fps=2.0, size="tower"))
        if family == "qwen2.5-vl":
            assert by_rate(2160, 3840) == spec.frame_size(3, 2160, 3840)
        else:
            assert by_rate is None
            assert spec.frame_size(4, 2160, 3840) != spec.frame_size(32, 2160, 3840)  # why the count matters


def smaller_budget(src: Path, dst: Path, family: str) -> Path:
    """A copy of the tiny checkpoint ``src`` whose video budget is a quarter of its own, so the
    sample clip (640x272) is decoded below its native size."""
    shutil.copytree(src, dst)
    path = dst / "video_preprocessor_config.json"
    data = json.loads(path.read_text())
    factor = data["patch_size"] * data["merge_size"]
    data["size"]["longest_edge"] = (1 if family == "qwen2.5-vl" else 16) * 16 * factor * factor
    path.write_text(json.dumps(data))
    return dst


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.reshape(-1, a.shape[-1]).double(),
                                                 b.reshape(-1, b.shape[-1]).double(), dim=-1)


def test_tower_size_decode_keeps_the_native_grid_and_tokens(tiny_qwen_dir, request, hf_models, tmp_path):
    """By default `aot compress` decodes Qwen frames at native size, as the processor receives
    them: its tokens are the model's on those frames. With `--decode-size tower` it decodes at
    about twice the processor's size: the cache records that size, its grid is the processor's for
    the native size, its tokens equal the model's on the frames at that size, and stay close to the
    tokens of native frames, both through aot's own path and through the processor rule and
    get_video_features on frames PyAV decodes natively."""
    from aot_cli.video import decode_video

    family = family_of(request)
    checkpoint = smaller_budget(tiny_qwen_dir, tmp_path / "ckpt", family)
    common = ["--model", checkpoint, "--frames", 7, "--method", "none", "--ratio", "1.0", "--device", "cpu",
              "--dtype", "fp32", "--decode-workers", 0, "-q"]
    # the default command (no --dtype, no --decode-size): a float32 checkpoint stays float32 on a CPU
    code, text = run_cli("compress", CLIP, "-o", tmp_path / "native.safetensors", "--model", checkpoint,
                         "--frames", 7, "--method", "none", "--ratio", "1.0", "--decode-workers", 0, "-q")
    assert code == 0, text
    by_default = only(tmp_path / "native.safetensors")
    assert by_default.meta["model"]["dtype"] == "fp32" and by_default.tensors()["tokens"].dtype == torch.float32
    assert tuple(by_default.meta["sampling"]["decode_size"]) == (272, 640)
    assert by_default.meta["config"]["decode"]["size"] == "auto"
    out = tmp_path / "small.safetensors"
    code, text = run_cli("compress", CLIP, "-o", out, *common, "--decode-size", "tower")
    assert code == 0, text
    entry = only(out)
    tensors = entry.tensors()
    native = (entry.meta["video"]["height"], entry.meta["video"]["width"])
    decoded = tuple(entry.meta["sampling"]["decode_size"])
    assert native == (272, 640) and decoded[0] < native[0] and decoded[1] < native[1]
    adapter = load_model(ModelConfig(model=str(checkpoint), dtype="fp32", device="cpu"))
    spec = adapter.video_spec
    grid = tuple(tensors["video_grid_thw"].tolist())
    assert grid == spec.grid_thw(7, *native) == spec.grid_thw(7, *decoded)
    assert (entry.meta["processor"]["resized_height"], entry.meta["processor"]["resized_width"]) == \
        spec.frame_size(7, *native)
    indices = tensors["frame_indices"].tolist()
    model = hf_models[family]

    def model_tokens(frames):
        pixels = video_pixels(frames, spec, torch.device("cpu"), torch.float32)
        patches, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
        assert thw == grid
        with torch.no_grad():
            return model.model.get_video_features(pixel_values_videos=patches, video_grid_thw=torch.tensor([thw]))

    at_size = model_tokens(decode_native(CLIP, indices, decoded))
    assert torch.allclose(tensors["tokens"], at_size.pooler_output[0], atol=1e-5)  # the processor's resize last
    from_native = model_tokens(decode_native(CLIP, indices))
    # the default (native) cache is the processor's input to the model: its tokens, not close ones
    assert by_default.tensors()["frame_indices"].tolist() == indices
    assert torch.allclose(by_default.tensors()["tokens"], from_native.pooler_output[0], atol=1e-5)
    independent = cosines(tensors["tokens"], from_native.pooler_output[0])
    assert float(independent.mean()) >= 0.99 and float(independent.min()) >= 0.95
    own_native = decode_video(CLIP, DecodeConfig(frames=7))
    assert tuple(own_native.frames.shape[1:3]) == native
    with torch.no_grad():
        native_tokens = adapter.features(adapter.preprocess(own_native.frames))
    same_path = cosines(tensors["tokens"], native_tokens)
    assert float(same_path.mean()) >= 0.999 and float(same_path.min()) >= 0.99
    if family == "qwen3-vl":
        want = torch.stack([f[0] for f in from_native.deepstack_features])
        assert float(cosines(tensors["deepstack"], want).mean()) >= 0.99


def test_processor_settings_aot_does_not_follow_are_refused_in_one_line():
    from aot_cli.models.errors import ModelLoadError

    base = {"size": {"shortest_edge": 128 * 32 * 32, "longest_edge": 768 * 32 * 32}, "patch_size": 16,
            "merge_size": 2, "temporal_patch_size": 2}
    assert spec_from_processor_config(dict(base, cap_pixels_per_frame=False), "video", "x.json").patch_size == 16
    for extra, named in (({"cap_pixels_per_frame": True, "max_video_tokens": 16}, "cap_pixels_per_frame"),
                         ({"do_resize": False}, "do_resize")):
        with pytest.raises(ModelLoadError) as info:
            spec_from_processor_config(dict(base, **extra), "video", "x.json")
        message = str(info.value)
        assert message.startswith("x.json: ") and named in message and "\n" not in message
