"""Pictures of a cached video (contact sheet, plots) and ratio sweeps, on real clips with a tiny
random LLaVA-OneVision checkpoint (126 px: 9x9 tower grid, 5x5 output grid)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aot_cli.cache import TokenCache, write_single
from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.core import AOTConfig
from aot_cli.inspect import pictures
from aot_cli.inspect.drawing import dim_mask
from aot_cli.inspect.layout import SHEET_WIDTH, cell_box, tower_region
from aot_cli.inspect.palette import ANCHOR_COLOR, KEPT_COLOR, KEYFRAME_COLOR
from aot_cli.inspect.pictures import (PictureError, frame_marks, plot_ratio_sweep, plot_tokens_per_frame,
                                      render_overlay)
from aot_cli.inspect.sweep import (parse_ratios, parse_references, reference_points, run_sweep, scaled_anchors,
                                   sweep_ratios)
from aot_cli.models import load_model
from aot_cli.pipeline.run import RunConfig, compress_video

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FRAMES = 8


@pytest.fixture(scope="module")
def adapter(tiny_llava_hf_dir):
    return load_model(ModelConfig(model=str(tiny_llava_hf_dir), dtype="fp32", device="cpu"))


def _cache_of(video: Path, out: Path, adapter, method: AOTConfig) -> Path:
    cfg = RunConfig(decode=DecodeConfig(frames=FRAMES),
                    model=ModelConfig(model=adapter.info.get("model", "tiny"), dtype="fp32", device="cpu"),
                    method=method)
    res = compress_video(video, cfg, adapter=adapter)
    return write_single(out, res.video_id, res.tensors, res.meta)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, adapter):
    """A copy of bikes.mp4 (so tests may change or move it) and its cache at ratio 0.25."""
    root = tmp_path_factory.mktemp("pictures")
    video = root / "bikes.mp4"
    shutil.copyfile(SAMPLES / "bikes.mp4", video)
    return video, _cache_of(video, root / "bikes.safetensors", adapter, AOTConfig(ratio=0.25))


def _colour_near(image: Image.Image, box, colour, band: int = 3) -> bool:
    """True when a pixel of ``colour`` lies within ``band`` pixels inside the edges of ``box``."""
    px = np.asarray(image)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    patch = px[y0:y1, x0:x1]
    edge = np.zeros(patch.shape[:2], dtype=bool)
    edge[:band, :] = edge[-band:, :] = edge[:, :band] = edge[:, -band:] = True
    return bool((patch[edge] == np.array(colour)).all(axis=1).any())


def test_overlay_layout_keyframe_border_and_kept_outlines(cached, tmp_path):
    video, cache_file = cached
    out = tmp_path / "sheet" / "bikes.png"
    res = render_overlay(cache_file, None, out, cols=3)
    assert out.is_file() and res.path == out
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".aot-tmp")]
    image = Image.open(out).convert("RGB")
    assert image.size == res.size
    assert (res.cols, res.rows) == (3, 3) and len(res.picture_boxes) == FRAMES
    assert res.keyframes == [0, 4]  # clips of 4 frames (LLaVA-OneVision profile)
    # tiles keep bikes.mp4's 640x272 aspect and sit in a 3-column grid inside the image
    widths = {x1 - x0 for x0, _, x1, _ in res.picture_boxes}
    heights = {y1 - y0 for _, y0, _, y1 in res.picture_boxes}
    assert len(widths) == len(heights) == 1
    w, h = widths.pop(), heights.pop()
    assert abs(w / h - 640 / 272) < 0.05
    assert len({x0 for x0, _, _, _ in res.picture_boxes}) == 3
    assert all(0 <= x0 and x1 <= res.size[0] and y1 <= res.size[1] for x0, _, x1, y1 in res.picture_boxes)
    # keyframes have an orange border just outside the picture; other frames do not
    for i, (x0, y0, x1, y1) in enumerate(res.picture_boxes):
        left = image.getpixel((x0 - 2, (y0 + y1) // 2))
        below = image.getpixel(((x0 + x1) // 2, y1 + 1))
        if i in res.keyframes:
            assert left == KEYFRAME_COLOR and below == KEYFRAME_COLOR
        else:
            assert left != KEYFRAME_COLOR and below != KEYFRAME_COLOR
    # every kept token of a non-key frame is outlined in the kept colour on its output-grid cell
    video_meta = TokenCache(cache_file)
    marks = frame_marks(video_meta[video_meta.ids()[0]])
    frame = next(m for m in marks if not m.keyframe and m.kept)
    x0, y0, x1, y1 = res.picture_boxes[frame.frame]
    tile = image.crop((x0, y0, x1, y1))
    for cell in frame.kept:
        assert _colour_near(tile, cell_box(cell, (5, 5), (0, 0, x1 - x0, y1 - y0)), KEPT_COLOR)
    empty = [c for c in range(25) if c not in frame.kept]
    assert not _colour_near(tile, cell_box(empty[0], (5, 5), (0, 0, x1 - x0, y1 - y0)), KEPT_COLOR, band=1)


def test_the_sheet_fits_a_screen_by_default_and_grows_on_request(cached, tmp_path):
    _, cache_file = cached
    default = render_overlay(cache_file, None, tmp_path / "default.png")
    assert SHEET_WIDTH - 8 <= default.size[0] <= SHEET_WIDTH == 2000
    assert default.size[1] <= 1500  # 8 frames: one or two rows, nothing to scroll
    tile = default.picture_boxes[0][2] - default.picture_boxes[0][0]
    assert tile / 5 >= 10  # an output-grid cell (5x5 here) is still at least 10 pixels
    wide = render_overlay(cache_file, None, tmp_path / "wide.png", width=4000)
    assert 4000 - 8 <= wide.size[0] <= 4000 and wide.cols == default.cols
    assert wide.picture_boxes[0][2] - wide.picture_boxes[0][0] > 1.8 * tile
    by_cell = render_overlay(cache_file, None, tmp_path / "cells.png", cell_px=40, cols=2)
    x0, y0, x1, y1 = by_cell.picture_boxes[0]
    assert by_cell.cols == 2 and abs(((x1 - x0) * (y1 - y0) / 25) ** 0.5 - 40) < 2  # cells of about 40 px
    with pytest.raises(PictureError, match="width must be at least"):
        render_overlay(cache_file, None, tmp_path / "narrow.png", width=10)


def test_columns_follow_the_grid_so_cells_stay_readable():
    from aot_cli.inspect.layout import MIN_CELL_PX, fit_tiles

    # 32 frames of 16:9 video, a centre crop (DINOv2: 16x16 grid on the middle square)
    crop = (280.0, 0.0, 1000.0, 720.0)
    cols, scale = fit_tiles(1280, crop, (16, 16), 32)
    assert cols < 8 and 720 * scale / 16 >= MIN_CELL_PX
    assert 2 * 12 + cols * 1280 * scale + (cols - 1) * 16 <= 2001
    # a small grid keeps eight columns; fewer frames, fewer columns
    assert fit_tiles(640, (0.0, 0.0, 640.0, 272.0), (5, 5), 32)[0] == 8
    assert fit_tiles(640, (0.0, 0.0, 640.0, 272.0), (5, 5), 3)[0] == 3


def test_frame_marks_agree_with_the_cache(cached):
    _, cache_file = cached
    cache = TokenCache(cache_file)
    v = cache[cache.ids()[0]]
    marks = frame_marks(v)
    assert len(marks) == FRAMES
    assert sum(m.tokens for m in marks) == v.meta["counts"]["achieved"] == round(0.25 * FRAMES * 25)
    assert [m.keyframe for m in marks] == [f % 4 == 0 for f in range(FRAMES)]
    for m, kept, merged, anchors in zip(marks, v["kept_per_frame"].tolist(), v["merged_per_frame"].tolist(),
                                        v["anchors_per_frame"].tolist()):
        assert len(m.tower_anchors) == anchors
        if m.keyframe:
            assert len(m.raw) == len(m.anchors) == kept and sorted(m.raw) == sorted(m.anchors) and not m.kept
        else:
            assert (len(m.kept), len(m.merged)) == (kept, merged) and not set(m.kept) & set(m.merged)
    assert [m.source_index for m in marks] == v["frame_indices"].tolist()


def test_dim_mask_lights_only_cells_with_a_token():
    marks = pictures.FrameMarks(frame=0, source_index=0, time_s=0.0, keyframe=False, clip=0, kept=[0, 7])
    mask = np.asarray(dim_mask(marks, (3, 3), (0.0, 0.0, 30.0, 30.0), (30, 30)))
    lit = {(r, c) for r in range(3) for c in range(3) if mask[r * 10 + 5, c * 10 + 5] == 255}
    assert lit == {(0, 0), (2, 1)}
    assert set(np.unique(mask).tolist()) == {0, 255}


def test_tower_region_follows_the_recorded_preprocessing():
    assert tower_region({"resize": "exact", "size": [378, 378], "crop": None}, 640, 272) == (0.0, 0.0, 640.0, 272.0)
    assert tower_region(None, 640, 272) == (0.0, 0.0, 640.0, 272.0)
    # CLIP-style: shortest edge 224 then a 224x224 centre crop: a centred square of the frame's height
    x0, y0, x1, y1 = tower_region({"resize": "shortest_edge", "shortest_edge": 224, "crop": [224, 224]}, 640, 272)
    assert (y0, y1) == (0.0, 272.0)
    assert abs((x1 - x0) - 272) < 2 and abs((x0 + x1) / 2 - 320) < 2


def test_changed_video_gives_a_one_line_error(cached, tmp_path, adapter):
    video, cache_file = cached
    changed = tmp_path / "bikes.mp4"
    shutil.copyfile(video, changed)
    with open(changed, "ab") as fh:
        fh.write(b"\0" * 16)
    with pytest.raises(PictureError) as err:
        render_overlay(cache_file, None, tmp_path / "x.png", video_path=changed)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(changed)) and "changed since it was cached" in msg
    assert not (tmp_path / "x.png").exists()


def test_missing_video_names_it_and_suggests_source(cached, tmp_path):
    video, cache_file = cached
    moved = tmp_path / "moved.mp4"
    video.rename(moved)
    try:
        with pytest.raises(PictureError) as err:
            render_overlay(cache_file, None, tmp_path / "x.png")
        msg = str(err.value)
        assert "\n" not in msg and str(video) in msg and "--source" in msg
        res = render_overlay(cache_file, None, tmp_path / "ok.png", video_path=moved, cols=8)
        assert res.size == Image.open(tmp_path / "ok.png").size and res.rows == 1
    finally:
        moved.rename(video)


def test_uncompressed_video_has_no_keyframes_or_dimming(tmp_path, adapter):
    video = SAMPLES / "realshort.mp4"
    cache_file = _cache_of(video, tmp_path / "none.safetensors", adapter, AOTConfig(method="none"))
    res = render_overlay(cache_file, None, tmp_path / "none.png", cols=4)
    assert res.keyframes == [] and (res.cols, res.rows) == (4, 2)
    image = Image.open(tmp_path / "none.png").convert("RGB")
    for x0, y0, x1, y1 in res.picture_boxes:
        assert image.getpixel((x0 - 2, (y0 + y1) // 2)) != KEYFRAME_COLOR
    # nothing dimmed: the sheet's pixels match the frame scaled to the tile
    from aot_cli.video import decode_video

    frame = decode_video(video, DecodeConfig(frames=FRAMES)).frames[0].numpy()
    x0, y0, x1, y1 = res.picture_boxes[0]
    want = np.asarray(Image.fromarray(frame).resize((x1 - x0, y1 - y0), Image.BILINEAR), dtype=np.float64)
    got = np.asarray(image.crop((x0, y0, x1, y1)), dtype=np.float64)
    assert abs(got.mean() - want.mean()) < 2.0


def test_video_id_must_name_one_video(tmp_path, cached):
    from aot_cli.cache import CacheWriter

    one = TokenCache(cached[1])
    with pytest.raises(PictureError, match="no video with id"):
        render_overlay(one, "nope.mp4", tmp_path / "x.png")
    v = one[one.ids()[0]]
    with CacheWriter(tmp_path / "cache") as writer:
        for vid in ("a.mp4", "b.mp4"):
            writer.add(vid, v.tensors(), v.meta)
    with pytest.raises(PictureError) as err:
        render_overlay(tmp_path / "cache", None, tmp_path / "x.png")
    assert "holds 2 videos" in str(err.value) and "--video" in str(err.value)
    res = render_overlay(tmp_path / "cache", "b.mp4", tmp_path / "b.png")
    assert len(res.picture_boxes) == FRAMES


def test_tokens_per_frame_plot(cached, tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_tokens_per_frame(cached[1], None, tmp_path / "plots" / "tokens.png")
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 300
    # the three kinds' colours appear as bars
    px = np.asarray(image.convert("RGB")).reshape(-1, 3)
    for colour in (KEYFRAME_COLOR, KEPT_COLOR, ANCHOR_COLOR):
        assert (px == np.array(colour)).all(axis=1).sum() > 100
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".aot-tmp")]


def test_missing_matplotlib_is_one_clear_line(cached, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PictureError) as err:
        plot_tokens_per_frame(cached[1], None, tmp_path / "t.png")
    msg = str(err.value)
    assert "\n" not in msg and "matplotlib" in msg and "pip install" in msg
    assert not (tmp_path / "t.png").exists()
    # `aot inspect --plot`: refused before the tables are printed
    from aot_cli.inspect.command import run_inspect

    import contextlib
    import io

    out, err_text = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err_text):
        code = run_inspect(str(cached[1]), plot_png=str(tmp_path / "t.png"))
    assert code == 2 and out.getvalue() == "" and "matplotlib is not installed" in err_text.getvalue()
    assert not (tmp_path / "t.png").exists()


def test_sweep_ratios_are_exact_and_reference_rules_scale():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(FRAMES, 81, 16, generator=g)
    shallow, deep = torch.rand(FRAMES, 81, generator=g), torch.rand(FRAMES, 81, generator=g)
    config = AOTConfig(ratio=0.1, pooling="bilinear", clip_length=4)
    points = sweep_ratios(tokens, shallow, deep, (9, 9), config, [0.001, 0.05, 0.1, 0.25])
    assert [p.requested for p in points] == [0.001, 0.05, 0.1, 0.25]
    assert points[0].error and points[0].achieved is None and "\n" not in points[0].error
    for p in points[1:]:
        assert p.error is None and p.achieved == p.planned == round(p.requested * FRAMES * 25)
        assert abs(p.achieved_ratio - p.requested) < 1 / (FRAMES * 25)
    assert scaled_anchors(126, 729) == 126 and scaled_anchors(126, 81) == 14 and scaled_anchors(1, 4) == 1
    refs = reference_points(tokens, shallow, deep, (9, 9), config, [(126, 0.3)])
    assert refs[0].num_anchors == 14 and refs[0].reference_anchors == 126 and refs[0].planned is None
    assert refs[0].anchors_per_frame == 7  # 3x3 windows: local int(14 * 0.5) // 9 = 0 each, 7 global
    assert 0 < refs[0].achieved < FRAMES * 25 and refs[0].label == "V=126 (=14 here), keep 0.3"


def test_parse_ratios_and_references():
    assert parse_ratios("0.05, 0.1,0.25") == [0.05, 0.1, 0.25]
    assert parse_references("126:0.3,108:0.1") == [(126, 0.3), (108, 0.1)] and parse_references("none") == []
    for bad in ("0", "1.5", "a,b", ""):
        with pytest.raises(ValueError):
            parse_ratios(bad)
    with pytest.raises(ValueError):
        parse_references("126")


def test_run_sweep_and_plot(adapter, tmp_path, tiny_llava_hf_dir):
    pytest.importorskip("matplotlib")
    cfg = RunConfig(decode=DecodeConfig(frames=4), model=ModelConfig(model=str(tiny_llava_hf_dir), dtype="fp32"))
    report = run_sweep(SAMPLES / "carphone_pristine.mp4", [0.1, 0.25, 0.5], cfg, adapter=adapter)
    assert (report.frames, report.tower_grid, report.grid) == (4, (9, 9), (5, 5))
    ratio_pts = [p for p in report.points if p.rule == "ratio"]
    assert [p.achieved for p in ratio_pts] == [round(r * 100) for r in (0.1, 0.25, 0.5)]
    assert len([p for p in report.points if p.rule == "reference"]) == 2
    out = plot_ratio_sweep(report.points, tmp_path / "sweep.png", title="carphone")
    assert Image.open(out).format == "PNG"
    with pytest.raises(PictureError, match="nothing to plot"):
        plot_ratio_sweep([], tmp_path / "empty.png")


# -- bounds: whatever the metadata claims ------------------------------------------------------------

def _edited_copy(cache_file, tmp_path, edit_meta=None, edit_tensors=None):
    """A copy of the cached video with its meta and/or tensors changed (written with write_single)."""
    cache = TokenCache(cache_file)
    v = cache[cache.ids()[0]]
    meta, tensors = json.loads(json.dumps(v.meta)), {n: t.clone() for n, t in v.tensors().items()}
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    return write_single(tmp_path / "edited.safetensors", cache.ids()[0], tensors, meta)


@pytest.fixture
def decode_calls(monkeypatch):
    """Records the decode settings of every decode_video call the pictures make."""
    import aot_cli.video as video_module

    calls = []
    real = video_module.decode_video

    def recording(path, cfg=None, default_frames=32, **options):
        calls.append((cfg.frames, cfg.fps, cfg.max_frames, default_frames))
        return real(path, cfg, default_frames=default_frames, **options)

    monkeypatch.setattr(video_module, "decode_video", recording)
    return calls


def test_overlay_decodes_only_the_frames_the_cache_holds_whatever_the_meta_claims(cached, tmp_path, decode_calls):
    video, cache_file = cached

    def claim(meta):
        meta["counts"]["frames"] = 200_000
        meta["sampling"]["requested_frames"] = 200_000

    res = render_overlay(_edited_copy(cache_file, tmp_path, claim), None, tmp_path / "a.png")
    assert len(res.picture_boxes) == FRAMES and decode_calls == [(FRAMES, None, None, FRAMES)]


def test_overlay_refuses_decode_settings_that_ask_for_more_frames_before_decoding(cached, tmp_path, decode_calls):
    video, cache_file = cached
    asks = _edited_copy(cache_file, tmp_path, lambda m: m["config"]["decode"].update(frames=200_000))
    with pytest.raises(PictureError, match="ask for 200000 frames but it holds 8; not decoding"):
        render_overlay(asks, None, tmp_path / "b.png")
    fps = _edited_copy(cache_file, tmp_path, lambda m: m["config"]["decode"].update(frames=None, fps=1000.0,
                                                                                   max_frames=None))
    res = render_overlay(fps, None, tmp_path / "c.png")  # rate sampling: capped at the frames held
    assert decode_calls == [(None, 1000.0, FRAMES, FRAMES)] and len(res.picture_boxes) == FRAMES
    assert not (tmp_path / "b.png").exists()


def test_overlay_of_more_frames_than_the_bound_is_one_line_and_decodes_nothing(cached, tmp_path, decode_calls):
    video, cache_file = cached
    count = pictures.MAX_OVERLAY_FRAMES + 44

    def many(tensors):
        for name in ("frame_indices", "timestamps", "anchors_per_frame", "cells_per_frame", "kept_per_frame",
                     "merged_per_frame", "anchor_mask", "cell_mask"):
            t = tensors[name]
            tensors[name] = t.repeat(count // FRAMES + 1, *([1] * (t.dim() - 1)))[:count].contiguous()

    with pytest.raises(PictureError) as err:
        render_overlay(_edited_copy(cache_file, tmp_path, edit_tensors=many), None, tmp_path / "d.png")
    assert f"has {count} sampled frames" in str(err.value) and "at most 256" in str(err.value)
    assert decode_calls == []


def test_pictures_check_every_value_they_index_with(cached, tmp_path):
    from aot_cli.cache import CacheError

    _, cache_file = cached
    cases = [
        (dict(edit_tensors=lambda t: t["frame"].fill_(FRAMES + 3)), "tensor 'frame' holds frame numbers outside"),
        (dict(edit_tensors=lambda t: t["index"].fill_(-2)), "tensor 'index' holds cells outside the 5x5 grid"),
        (dict(edit_tensors=lambda t: t["segments"].fill_(7)), "tensor 'segments' holds clips outside"),
        (dict(edit_tensors=lambda t: t["kind"].fill_(9)), "tensor 'kind' holds values other than 0-3"),
        (dict(edit_meta=lambda m: m["counts"].update(grid=[5000, 5])), "'counts.grid' [5000, 5] has a side over"),
        (dict(edit_meta=lambda m: m["counts"].update(tower_grid=[3, 3])), "tensor 'anchor_mask' has shape"),
        (dict(edit_meta=lambda m: m["counts"].update(ratio="high")), "'counts.ratio' is 'high', not a number"),
        (dict(edit_meta=lambda m: m["model"].update(preprocessing={"size": [0, 3]})),
         "'model.preprocessing.size' is '[0, 3]', not a list of two positive integers"),
    ]
    for edits, message in cases:
        path = _edited_copy(cache_file, tmp_path, **edits)
        with pytest.raises((CacheError, PictureError)) as err:
            render_overlay(path, None, tmp_path / "x.png")
        assert message in str(err.value) and "\n" not in str(err.value), (message, str(err.value))
    assert not (tmp_path / "x.png").exists()


def test_a_sheet_too_large_is_refused(cached, tmp_path):
    _, cache_file = cached
    with pytest.raises(PictureError, match="million pixels .*lower --cell-px"):
        render_overlay(cache_file, None, tmp_path / "huge.png", cell_px=5000)
