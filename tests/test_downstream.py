"""Downstream consumers: cached tokens spliced into a tiny transformers LLaVA-OneVision must give the
model's own logits, compressed caches must splice their exact count and generate, the dataset must
serve every video once through worker processes, and `aot ask` must answer end to end on CPU."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from aot_cli.cache import CacheWriter, TokenCache
from aot_cli.cli import main
from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.core import KIND_NEWLINE
from aot_cli.downstream import (CacheDataset, DownstreamError, build_input_ids, build_inputs_embeds,
                                collate_videos, generate_answer)
from checkpoints import IMAGE, PATCH, build_llava_hf, build_siglip, llava_hf_model, save_tiny_tokenizer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIP = SAMPLES / "bikes.mp4"
QUESTION = "what is in the video ?"
VIDEO_ID = 121  # as in checkpoints.llava_hf_model
def compress(args):
    r = CliRunner().invoke(main, ["compress", str(CLIP), "--dtype", "fp32", "-q", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cache = TokenCache(args[args.index("-o") + 1])
    return cache[cache.ids()[0]]


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """A tiny LLaVA-OneVision checkpoint with a tokenizer, the loaded model and tokenizer, and two
    caches of bikes.mp4 made with it: compression off (4 frames) and --ratio 0.1 (8 frames)."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    root = tmp_path_factory.mktemp("downstream")
    ckpt = save_tiny_tokenizer(build_llava_hf(root / "llava"))
    off = compress(["--model", str(ckpt), "--method", "none", "--ratio", "1.0", "--frames", "4",
                    "-o", str(root / "off.safetensors")])
    aot = compress(["--model", str(ckpt), "--ratio", "0.1", "--frames", "8", "-o", str(root / "aot.safetensors")])
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
    return {"dir": ckpt, "root": root, "model": model, "tokenizer": AutoTokenizer.from_pretrained(ckpt),
            "off": off, "aot": aot}


def test_spliced_embeds_give_the_models_own_logits_with_compression_off(llava):
    """Cached tokens (method none) spliced in == the model's forward on the same frames."""
    from aot_cli.models import load_model
    from aot_cli.video import decode_video

    model, tokenizer, video = llava["model"], llava["tokenizer"], llava["off"]
    embeds, mask = build_inputs_embeds(model, tokenizer, QUESTION, video)
    # the model's own path: processor-style placeholder expansion (frames x pooled grid + 1 newline)
    per_frame = math.ceil((IMAGE // PATCH) / 2) ** 2
    n_video = 4 * per_frame + 1
    assert len(video.tokens) == n_video
    text = tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
                                         add_generation_prompt=True, tokenize=False)
    ref_ids = torch.tensor([tokenizer(text.replace("<video>", "<video>" * n_video), add_special_tokens=False)["input_ids"]])
    assert torch.equal(build_input_ids(model, tokenizer, QUESTION, n_video), ref_ids)
    adapter = load_model(ModelConfig(model=str(llava["dir"]), dtype="fp32"))
    # the frames `aot compress` read: decoded at the tower's size (see README "Decoding")
    pixels = adapter.preprocess(decode_video(CLIP, DecodeConfig(frames=4), target_size=adapter.spec.resized_size).frames)
    with torch.no_grad():
        want = model(input_ids=ref_ids, pixel_values_videos=pixels[None]).logits
        got = model(inputs_embeds=embeds, attention_mask=mask).logits
    assert embeds.shape == (1, ref_ids.shape[1], model.config.text_config.hidden_size) and mask.shape == ref_ids.shape
    assert torch.allclose(got[:, -1], want[:, -1], atol=1e-4, rtol=0), (got[:, -1] - want[:, -1]).abs().max()
    assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()


def test_compressed_cache_splices_its_exact_count_and_generates(llava):
    model, tokenizer, video = llava["model"], llava["tokenizer"], llava["aot"]
    planned = video.meta["counts"]["planned"]
    assert planned == round(0.1 * 8 * 25) and len(video.tokens) == planned + 1  # + one newline
    assert video.kind[-1] == KIND_NEWLINE and int((video.kind == KIND_NEWLINE).sum()) == 1
    embeds, mask = build_inputs_embeds(model, tokenizer, QUESTION, video)
    ids = build_input_ids(model, tokenizer, QUESTION, len(video.tokens))
    at_video = ids[0] == VIDEO_ID
    assert int(at_video.sum()) == len(video.tokens) and mask.shape == ids.shape and bool(mask.all())
    assert torch.equal(embeds[0, at_video], video.tokens)  # in order, newline last
    assert torch.equal(embeds[0, ~at_video], model.get_input_embeddings()(ids[0, ~at_video]))
    with torch.inference_mode():
        text, new_ids = generate_answer(model, tokenizer, embeds, mask, max_new_tokens=3)
    assert 1 <= new_ids.numel() <= 3 and isinstance(text, str)
    # a dataset item with bf16 tokens: cast to the model's dtype on the way in
    item = {"id": video.id, "tokens": video.tokens.to(torch.bfloat16), "kind": video.kind, "meta": video.meta}
    cast, _ = build_inputs_embeds(model, tokenizer, QUESTION, item)
    assert cast.dtype == torch.float32
    assert torch.equal(cast[0, at_video], video.tokens.to(torch.bfloat16).float())


def test_caches_that_do_not_fit_the_llm_are_refused_with_one_line_errors(llava, tmp_path):
    model, tokenizer, video = llava["model"], llava["tokenizer"], llava["aot"]
    # a plain tower's tokens (even with a LLaVA profile borrowed for pooling) are not in LLM space
    siglip = build_siglip(tmp_path / "siglip")
    plain = compress(["--model", str(siglip), "--profile", "llava-onevision", "--frames", "4",
                      "-o", str(tmp_path / "plain.safetensors")])
    with pytest.raises(DownstreamError, match="not in the LLM's embedding space") as err:
        build_inputs_embeds(model, tokenizer, QUESTION, plain)
    assert "plain.safetensors" in str(err.value) and "\n" not in str(err.value)
    narrow = {"id": "x", "tokens": video.tokens[:, :32], "meta": video.meta}
    with pytest.raises(DownstreamError, match="32 wide but the LLM's hidden size is 48"):
        build_inputs_embeds(model, tokenizer, QUESTION, narrow)
    other = llava_hf_model(seed=1)  # same shapes, other weights: its image_newline differs
    with pytest.raises(DownstreamError, match="another checkpoint"):
        build_inputs_embeds(other, tokenizer, QUESTION, video)
    with pytest.raises(DownstreamError, match="2 video placeholders"):
        build_inputs_embeds(model, tokenizer, "<video> and <video>", video)


def test_raw_prompt_with_placeholder_is_used_verbatim(llava):
    model, tokenizer, video = llava["model"], llava["tokenizer"], llava["aot"]
    ids = build_input_ids(model, tokenizer, "<|im_start|>user <video>\nwhat ?<|im_end|>", len(video.tokens))
    expected = [2, 4] + [VIDEO_ID] * len(video.tokens) + [6, 11, 3]
    assert ids[0].tolist() == expected


def synthetic_cache(directory: Path, lengths, width: int = 8) -> dict:
    """A cache directory of len(lengths) videos with random tokens (several small shards)."""
    videos = {}
    with CacheWriter(directory, shard_size=600) as writer:
        for i, n in enumerate(lengths):
            g = torch.Generator().manual_seed(i)
            tensors = {"tokens": torch.randn(n, width, generator=g), "kind": torch.full((n,), 1, dtype=torch.uint8),
                       "frame_indices": torch.arange(i + 1, dtype=torch.int64)}
            writer.add(f"clip{i}.mp4", tensors, {"counts": {"total": n}})
            videos[f"clip{i}.mp4"] = tensors
    return videos


def test_dataloader_with_two_workers_yields_every_video_once(tmp_path):
    lengths = [5, 3, 7, 1, 4]
    videos = synthetic_cache(tmp_path / "cache", lengths)
    ds = CacheDataset(tmp_path / "cache", names=("tokens", "kind", "frame_indices"))
    assert len(ds) == len(lengths) and ds[2]["meta"] == {"counts": {"total": 7}}
    assert pickle.loads(pickle.dumps(ds))[1]["id"] == ds[1]["id"]  # picklable after use
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_videos, multiprocessing_context="spawn")
    seen = []
    for batch in loader:
        seen.extend(batch["ids"])
        tmax = int(batch["lengths"].max())
        assert batch["tokens"].shape == (len(batch["ids"]), tmax, 8) and batch["attention_mask"].shape == (len(batch["ids"]), tmax)
        assert torch.equal(batch["attention_mask"].sum(1), batch["lengths"])
        for b, vid in enumerate(batch["ids"]):
            n = int(batch["lengths"][b])
            assert torch.equal(batch["tokens"][b, :n], videos[vid]["tokens"])
            assert not batch["tokens"][b, n:].any() and torch.equal(batch["kind"][b, :n], videos[vid]["kind"])
            assert torch.equal(batch["frame_indices"][b], videos[vid]["frame_indices"])  # per-video: a list
    assert sorted(seen) == sorted(videos) and len(seen) == len(set(seen))


def test_collate_left_padding_lists_and_errors(tmp_path):
    synthetic_cache(tmp_path / "cache", [2, 4])
    ds = CacheDataset(tmp_path / "cache", ids=["clip1.mp4", "clip0.mp4"], with_meta=False)
    left = collate_videos([ds[0], ds[1]], padding_side="left")
    assert left["ids"] == ["clip1.mp4", "clip0.mp4"] and "meta" not in left
    assert left["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert torch.equal(left["tokens"][1, 2:], ds[1]["tokens"])
    lists = collate_videos([ds[0], ds[1]], pad=False)
    assert [t.shape[0] for t in lists["tokens"]] == [4, 2] and "attention_mask" not in lists
    with pytest.raises(DownstreamError, match="not cached: 'nope.mp4'"):
        CacheDataset(tmp_path / "cache", ids=["nope.mp4"])
    wide = {"id": "w", "tokens": torch.zeros(3, 9)}
    with pytest.raises(DownstreamError, match="'tokens' of video 'w'"):
        collate_videos([ds[0], wide])


def test_ask_command_end_to_end_on_cpu(llava):
    video = llava["aot"]
    args = ["ask", str(video.path), "--video", video.id, "--model", str(llava["dir"]), QUESTION,
            "--max-new-tokens", "4", "--device", "cpu", "--dtype", "fp32"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    model, tokenizer = llava["model"], llava["tokenizer"]
    with torch.inference_mode():
        embeds, mask = build_inputs_embeds(model, tokenizer, QUESTION, video)
        want, _ = generate_answer(model, tokenizer, embeds, mask, max_new_tokens=4)
    assert want and r.stdout.strip() == want  # greedy: the same answer as the library call
    # --video takes the file name alone when one id ends with it, as `aot inspect --video` does
    name = Path(video.id).name
    assert name != video.id
    by_name = CliRunner().invoke(main, args[:3] + [name] + args[4:])
    assert by_name.exit_code == 0, by_name.output
    assert by_name.stdout.strip() == want
    unknown = CliRunner().invoke(main, args[:3] + ["nope.mp4"] + args[4:])
    lines = [line for line in unknown.stderr.splitlines() if line.strip()]
    assert unknown.exit_code == 2 and len(lines) == 1, unknown.output
    assert "'nope.mp4'" in lines[0] and repr(video.id) in lines[0] and "cache.ids()" not in lines[0]
    bad = CliRunner().invoke(main, ["ask", str(video.path), "--model", str(llava["root"] / "missing"), QUESTION])
    assert bad.exit_code == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0] and "no such checkpoint directory" in lines[0]


# ------------------------------------------------------------------ finding a benchmark's video in a cache

def _entry(writer: CacheWriter, video_id: str, data: bytes, recorded_path: str, given=None) -> None:
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    video = {"path": recorded_path, "size_bytes": len(data), "sha256": sha}
    if given is not None:
        video["given_path"] = given
    writer.add(video_id, {"tokens": torch.zeros(2, 4)}, {"video": video, "sha256": sha})


def test_lookup_tries_id_then_path_then_unique_name_then_content_hash(tmp_path, monkeypatch):
    from aot_cli.downstream.lookup import Match, VideoLookup

    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "other").mkdir()
    a, b, c = data / "clips" / "a.mp4", data / "clips" / "b.mp4", tmp_path / "elsewhere" / "c.mp4"
    for path, content in ((a, b"A" * 100), (b, b"B" * 50), (c, b"C" * 70), (tmp_path / "other" / "a.mp4", b"X" * 10)):
        path.write_bytes(content)
    with CacheWriter(tmp_path / "cache") as writer:
        _entry(writer, "clips/a.mp4", b"A" * 100, "clips/a.mp4")  # an older cache: relative path
        _entry(writer, "b-entry", b"B" * 50, "/moved/b.mp4", given=str(b))
        _entry(writer, "hash-of-c", b"C" * 70, "/gone/c.mp4")
        _entry(writer, "set1/x.mp4", b"1", "/gone/1/x.mp4")
        _entry(writer, "set2/x.mp4", b"2", "/gone/2/x.mp4")
    monkeypatch.chdir(data)
    lookup = VideoLookup(TokenCache(tmp_path / "cache"))
    assert lookup.find("clips/a.mp4") == Match("clips/a.mp4", "id")
    assert lookup.find("./clips/../clips/a.mp4") == Match("clips/a.mp4", "id")
    assert lookup.find(str(a)) == Match("clips/a.mp4", "path")  # recorded relative path, resolved here
    assert lookup.find(str(b)) == Match("b-entry", "path")  # given_path
    assert lookup.find("../data/clips/b.mp4") == Match("b-entry", "path")
    assert lookup.find("/mnt/bench/clips/a.mp4") == Match("clips/a.mp4", "name")  # no such file: name only
    assert lookup.find(str(tmp_path / "other" / "a.mp4")) is None  # same name, other size, other content
    assert lookup.find(str(c)) == Match("hash-of-c", "sha256")
    assert lookup.find("/mnt/bench/x.mp4") is None  # two cached ids end with x.mp4
    assert lookup.find("/mnt/bench/set2/x.mp4") == Match("set2/x.mp4", "name")


# ------------------------------------------------------------------ CachedVideoLLM (the lmms-eval models' core)

def _reference_ids(tokenizer, question: str, n_video: int) -> torch.Tensor:
    """The model's own prompt: the chat template's <video> repeated as the processor does."""
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    return torch.tensor([tokenizer(text.replace("<video>", "<video>" * n_video), add_special_tokens=False)["input_ids"]])


def test_cached_llm_reproduces_the_models_own_answer_and_loglikelihood_with_compression_off(llava):
    from aot_cli.downstream.evaluation import CachedVideoLLM
    from aot_cli.models import load_model
    from aot_cli.video import decode_video

    model, tokenizer, video = llava["model"], llava["tokenizer"], llava["off"]
    llm = CachedVideoLLM(str(llava["dir"]), video.path, device="cpu", dtype="fp32")
    text, used = llm.generate(QUESTION, str(CLIP), max_new_tokens=5)
    nll, greedy, _ = llm.loglikelihood(QUESTION, " a bike", str(CLIP))
    assert used.video_id == video.id and used.video_tokens == len(video.tokens) == 4 * 25 + 1
    adapter = load_model(ModelConfig(model=str(llava["dir"]), dtype="fp32"))
    decoded = decode_video(CLIP, DecodeConfig(frames=4), target_size=adapter.spec.resized_size)  # as compress reads
    assert decoded.indices == video["frame_indices"].tolist()  # the same sampled frames
    pixels = adapter.preprocess(decoded.frames)[None]
    ids = _reference_ids(tokenizer, QUESTION, 4 * 25 + 1)
    cont = torch.tensor([tokenizer(" a bike", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values_videos=pixels, attention_mask=torch.ones_like(ids),
                             max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        logits = model(input_ids=torch.cat([ids, cont], 1), pixel_values_videos=pixels).logits[0].log_softmax(-1)
    want_text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    scored = logits[ids.shape[1] - 1:-1]
    want_nll = -scored.gather(1, cont[0, :, None]).mean().item()
    assert want_text and text == want_text
    assert nll == pytest.approx(want_nll, abs=1e-4) and greedy == bool((scored.argmax(-1) == cont[0]).all())
    assert used.prompt_tokens == ids.shape[1]
    # a document without a video: its text alone, through the chat template
    text_only, used = llm.generate(QUESTION, None, max_new_tokens=3)
    plain = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                          tokenize=False)
    plain_ids = torch.tensor([tokenizer(plain, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=plain_ids, attention_mask=torch.ones_like(plain_ids), max_new_tokens=3,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert text_only == tokenizer.decode(out[0, plain_ids.shape[1]:], skip_special_tokens=True).strip()
    assert (used.video_id, used.video_tokens, used.prompt_tokens) == (None, 0, plain_ids.shape[1])


def test_cached_llm_refuses_caches_of_another_model_before_loading_it(llava, tmp_path):
    from aot_cli.downstream.evaluation import CachedVideoLLM

    aot = llava["aot"]
    missing_ckpt = str(tmp_path / "no-checkpoint")  # never reached: the cache is checked first
    with pytest.raises(DownstreamError, match="made with the llava-onevision profile.*use aot_llava_onevision"):
        CachedVideoLLM(missing_ckpt, aot.path, family="llava-video", readers={"llava-onevision": "aot_llava_onevision"})
    meta = dict(aot.meta, newline="grid")
    with CacheWriter(tmp_path / "grid") as writer:
        writer.add("v.mp4", {"tokens": aot.tokens, "kind": aot.kind}, meta)
    with pytest.raises(DownstreamError, match="records newline convention 'grid'"):
        CachedVideoLLM(missing_ckpt, tmp_path / "grid")
    with CacheWriter(tmp_path / "narrow") as writer:
        writer.add("v.mp4", {"tokens": aot.tokens[:, :32], "kind": aot.kind}, aot.meta)
    with pytest.raises(DownstreamError, match=r"\[21, 32\] but the LLM of .* is 48 wide") as err:
        CachedVideoLLM(str(llava["dir"]), tmp_path / "narrow")
    assert "\n" not in str(err.value)
    with pytest.raises(DownstreamError, match="on_miss=sometimes: choose one of error, compress"):
        CachedVideoLLM(str(llava["dir"]), aot.path, on_miss="sometimes")
    with pytest.raises(DownstreamError, match="single .safetensors file cannot take new videos"):
        CachedVideoLLM(str(llava["dir"]), aot.path, on_miss="compress")
    with pytest.raises(DownstreamError, match="holds no cache"):
        CachedVideoLLM(str(llava["dir"]), tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownstreamError, match="holds no cache"):
        CachedVideoLLM(str(llava["dir"]), tmp_path / "empty")


def test_cached_llm_compresses_a_missing_video_with_the_caches_configuration(llava, tmp_path):
    import json

    from aot_cli.downstream.evaluation import CachedVideoLLM

    cache_dir = tmp_path / "cache"
    first = compress(["--model", str(llava["dir"]), "--ratio", "0.1", "--frames", "8", "-o", str(cache_dir)])
    other = SAMPLES / "carphone_pristine.mp4"
    record = tmp_path / "record.jsonl"
    llm = CachedVideoLLM(str(llava["dir"]), cache_dir, on_miss="compress", device="cpu", dtype="fp32",
                         record=record, decode_workers=0)
    with pytest.raises(DownstreamError, match="nope.mp4: video not in the cache .* no such file"):
        llm.prepare([str(tmp_path / "nope.mp4")])
    found = llm.prepare([str(other), str(CLIP)])
    assert found[str(CLIP)].video_id == first.id and llm.last_compression.done == 1
    cache = TokenCache(cache_dir)
    added = cache[found[str(other)].video_id]
    assert added.meta["config_fingerprint"] == first.meta["config_fingerprint"]  # the recorded configuration
    assert added.meta["counts"]["achieved"] == round(0.1 * 8 * 25) and added.meta["counts"]["frames"] == 8
    text, used = llm.generate(QUESTION, str(other), max_new_tokens=3)
    assert used.video_id == added.id and used.video_tokens == len(added.tokens)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line.get("event") for line in lines] == ["compressed", None]
    assert lines[1]["cache_id"] == added.id and lines[1]["video_tokens"] == len(added.tokens)
    again = CachedVideoLLM(str(llava["dir"]), cache_dir, on_miss="compress", device="cpu", dtype="fp32")
    assert again.prepare([str(other)])[str(other)].video_id == added.id and again.last_compression is None


def test_a_torchvision_that_cannot_load_is_named_as_the_cause(tiny_llava_hf_dir, tmp_path):
    """transformers imports torchvision with the vision-language model classes once it is
    installed; one that does not load beside this torch (a wheel built for another torch) must be
    named in the one-line error, not hidden behind "Could not import module ..."."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    (fake / "torchvision-0.28.0.dist-info").mkdir()
    (fake / "torchvision-0.28.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
    code = ("from aot_cli.downstream import DownstreamError, load_generator\n"
            "try:\n"
            f"    load_generator({str(tiny_llava_hf_dir)!r}, device='cpu', dtype='fp32')\n"
            "except DownstreamError as exc:\n"
            "    print(exc)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and len(lines) == 1, done.stdout + done.stderr[-2000:]
    assert lines[0].startswith(f"{tiny_llava_hf_dir}: cannot load the")
    assert "torchvision 0.28.0 is installed but does not load beside torch" in lines[0]
    assert "operator torchvision::nms does not exist" in lines[0] and "pip uninstall -y torchvision" in lines[0]
