"""Answering benchmark questions from a token cache: what the lmms-eval models of
:mod:`aot_cli.lmms_eval` run, usable without lmms-eval.

:class:`CachedVideoLLM` holds a transformers video LLM of one family (a consumer of
:data:`aot_cli.downstream.inputs.CONSUMERS`: LLaVA-OneVision, LLaVA-Video, Qwen2.5-VL, Qwen3-VL,
Qwen3.5) and a cache. Each
question names its video by a path; the path is looked up in the cache by the rule of
:mod:`aot_cli.downstream.lookup`, the question and the cached tokens become the model's inputs
through :func:`~aot_cli.downstream.inputs.model_inputs`, and the model generates or scores a
continuation, one request or a left-padded batch at a time. Videos that are not cached are either
refused (``on_miss="error"``) or compressed into the cache first (``on_miss="compress"``) by the
same batch pipeline as ``aot compress`` (:func:`aot_cli.pipeline.batch.run_batch`: decode workers,
atomic shard commits, failures recorded in the index), with the configuration the cache's videos
were made with.

    llm = CachedVideoLLM("llava-hf/llava-onevision-qwen2-7b-ov-hf", "cache/", on_miss="compress")
    llm.prepare(["videos/a.mp4", "videos/b.mp4"])      # compress what is missing, in one batch
    text, used = llm.generate("What happens?", "videos/a.mp4", max_new_tokens=32)
    nll, greedy, used = llm.loglikelihood("Is it a dog?", " yes", "videos/b.mp4")
    answers = llm.generate_batch([("What happens?", "videos/a.mp4", {}), ("And here?", "videos/b.mp4", {})])
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from aot_cli.cache import CacheError, TokenCache

from .errors import DownstreamError
from .generation import generate_texts, score_continuations
from .inputs import CONSUMERS, Inputs, consumer_for_meta, model_inputs
from .llava import text_tokenizer
from .lookup import Match, VideoLookup

ON_MISS = ("error", "compress")


@dataclass
class Used:
    """What one request fed the LLM: the cached ``video_id`` (None for a text-only request) and
    the ``rule`` that found it, ``video_tokens`` spliced (newlines included), ``prompt_tokens`` of
    the whole prompt."""

    video_id: Optional[str]
    rule: Optional[str]
    video_tokens: int
    prompt_tokens: int


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class CachedVideoLLM:
    """A video LLM answering questions about cached videos.

    ``checkpoint``: a transformers checkpoint of ``family``'s LLM (local directory or hub id; a
    ``model_type`` of the family's consumer, e.g. ``llava_onevision``, ``qwen2_5_vl``,
    ``qwen3_vl``, ``qwen3_5``). ``cache``: a cache directory (or, with ``on_miss="error"``, a
    single aot ``.safetensors`` file). ``family``: the cache profile this model reads (a key of
    :data:`~aot_cli.downstream.inputs.CONSUMERS`: "llava-onevision", "llava-video", "qwen2.5-vl",
    "qwen3-vl", "qwen3.5"). ``on_miss``: "error" (a video not in the cache raises) or
    "compress" (it is compressed into the cache first; a missing cache directory is created).
    ``record``: a JSONL file that gets one line per request and per compressed video.
    ``decode_workers``: decode processes for compression (None: as ``aot compress``). ``readers``:
    family -> the name of the model that reads it, for the hint when a cache of another family is
    given (the lmms-eval plugin passes its model names).

    The cache is checked before the model is loaded: every cached video must come from the vision
    side of ``family``'s LLM (its meta checks included) with the LLM's hidden size, else
    :class:`DownstreamError` (one line). Once the model is loaded, the first cached video goes
    through :func:`~aot_cli.downstream.inputs.model_inputs` (for LLaVA: its newline rows against
    the model's ``image_newline``; for Qwen: the recorded vision tower, merge size and DeepStack
    depth against the model's). ``can_batch``: whether requests can be batched (the family has a
    ``collate``).
    """

    def __init__(self, checkpoint: str, cache: Union[str, Path], *, family: str = "llava-onevision",
                 on_miss: str = "error", device: str = "auto", dtype: str = "auto",
                 revision: Optional[str] = None, record: Optional[Union[str, Path]] = None,
                 decode_workers: Optional[int] = None, rank: Tuple[int, int] = (0, 1),
                 readers: Optional[Mapping[str, str]] = None) -> None:
        from .ask import checked_consumer, checkpoint_config, load_generator, resolve_device, resolve_dtype

        if on_miss not in ON_MISS:
            raise DownstreamError(f"on_miss={on_miss}: choose one of {', '.join(ON_MISS)}")
        if family not in CONSUMERS:
            raise DownstreamError(f"family {family!r}: choose one of {', '.join(sorted(CONSUMERS))}")
        self.checkpoint, self.revision, self.family, self.on_miss = checkpoint, revision, family, on_miss
        self.consumer = CONSUMERS[family]
        self.readers = dict(readers or {})
        self.cache_path = Path(cache)
        self.decode_workers, self.rank = decode_workers, rank
        self.device_name = device
        self._adapter = None
        self._record = None
        self._matches: Dict[str, Match] = {}
        #: Summary of the last compression run (None until a video was compressed).
        self.last_compression = None
        #: Ids of the videos compressed into the cache by this object, in order.
        self.compressed_ids: List[str] = []
        try:
            fresh = self.cache_path.is_dir() and not any(self.cache_path.iterdir())  # e.g. made by mkdir
        except OSError as exc:
            raise DownstreamError(f"{self.cache_path}: cannot read the cache directory ({exc.strerror or exc})") from None
        if (fresh or not self.cache_path.exists()) and on_miss == "error":
            raise DownstreamError(f"{self.cache_path}: holds no cache (on_miss=compress creates one)")
        if self.cache_path.is_file() and on_miss == "compress":
            raise DownstreamError(f"{self.cache_path}: a single .safetensors file cannot take new videos; give a "
                                  "cache directory, or on_miss=error")
        self.cache: Optional[TokenCache] = TokenCache(self.cache_path) if self.cache_path.exists() and not fresh else None
        self.lookup = VideoLookup(self.cache) if self.cache is not None else None
        self._check_entries_meta()
        resolve_dtype(dtype, resolve_device(device))
        config, _ = checkpoint_config(checkpoint, revision)
        checked_consumer(checkpoint, config, self.consumer)
        #: The checkpoint's ``config.model_type``.
        self.model_type = str(config.model_type)
        self.hidden_size = int(config.get_text_config().hidden_size)
        self._check_entries_width()
        if record is not None:
            path = Path(record)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._record = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise DownstreamError(f"{path}: cannot open the record file ({exc.strerror or exc})") from None
        self.model, self.text_side = load_generator(checkpoint, consumer=self.consumer, device=device, dtype=dtype,
                                                    revision=revision)
        if self.cache is not None and len(self.cache):
            model_inputs(self.model, self.text_side, "", self.cache[self.cache.ids()[0]])

    @property
    def can_batch(self) -> bool:
        """Whether several requests can run as one left-padded batch."""
        return self.consumer.collate is not None

    # ------------------------------------------------------------------------------ checks
    def _check_meta(self, video_id: str, meta: Mapping[str, Any]) -> None:
        where = f"{self.cache_path}: video {video_id!r}"
        consumer = consumer_for_meta(meta, where)
        if consumer.family != self.family:
            other = self.readers.get(consumer.family)
            hint = f"use {other}, or a cache made for {self.family}" if other else f"use a cache made for {self.family}"
            raise DownstreamError(f"{where}: made with the {consumer.family} profile but this model reads {self.family} "
                                  f"caches ({hint})")

    def _check_entries_meta(self) -> None:
        if self.cache is None:
            return
        for row in self.cache.entries():
            self._check_meta(row["id"], row.get("meta") if isinstance(row.get("meta"), Mapping) else {})

    def _check_entries_width(self) -> None:
        if self.cache is None:
            return
        for vid in self.cache.ids():
            shape = self.cache[vid].shapes.get("tokens")
            if shape is None or len(shape) != 2 or shape[1] != self.hidden_size:
                raise DownstreamError(f"{self.cache_path}: video {vid!r}: cached tokens are {list(shape or [])} but "
                                      f"the LLM of {self.checkpoint} is {self.hidden_size} wide (another model made "
                                      "this cache)")

    # ------------------------------------------------------------------------------ lookup
    def find(self, reference: str) -> Optional[Match]:
        """The cached video ``reference`` names (None: not cached)."""
        return self.lookup.find(str(reference)) if self.lookup is not None else None

    def prepare(self, references: Iterable[str]) -> Dict[str, Match]:
        """Resolve every reference once; with ``on_miss="compress"`` compress all missing videos
        in one batch first. Returns reference -> match. Raises :class:`DownstreamError` naming the
        first video that is not cached (``on_miss="error"``) or could not be compressed."""
        unique = list(dict.fromkeys(str(r) for r in references))
        found = {ref: self._matches.get(ref) or self.find(ref) for ref in unique}
        missing = [ref for ref, match in found.items() if match is None]
        if missing and self.on_miss == "error":
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DownstreamError(f"{missing[0]}: video not in the cache {self.cache_path}{more}; compress it first "
                                  "(aot compress ... -o CACHE) or use on_miss=compress")
        if missing:
            self._compress(missing)
            found.update({ref: self.find(ref) for ref in missing})
            still = [ref for ref in missing if found[ref] is None]
            if still:
                raise DownstreamError(f"{still[0]}: compressed into {self.cache_path}, but the lookup does not find it")
        self._matches.update(found)
        return found

    # ------------------------------------------------------------------------------ compression
    def compress_config(self):
        """The :class:`~aot_cli.pipeline.run.RunConfig` for videos added to the cache: the
        configuration recorded by its videos (``meta["config"]``; all must agree) with this
        checkpoint and device; for an empty cache the ``aot compress`` defaults for this checkpoint
        with this family's profile."""
        from aot_cli.pipeline.cli_support import build_run_config

        recorded: Dict[str, dict] = {}
        for row in self.cache.entries() if self.cache is not None else []:
            meta = row.get("meta") if isinstance(row.get("meta"), Mapping) else {}
            config = meta.get("config")
            if isinstance(config, Mapping):
                model = {k: v for k, v in (config.get("model") or {}).items() if k not in ("model", "device", "revision")}
                sections = {k: dict(config.get(k) or {}) for k in ("decode", "method", "storage")}
                sections["model"] = model
                recorded.setdefault(json.dumps(sections, sort_keys=True), sections)
        if len(recorded) > 1:
            raise DownstreamError(f"{self.cache_path}: its videos were made with {len(recorded)} different "
                                  "configurations, so a new video's is ambiguous; compress it with aot compress")
        sections = next(iter(recorded.values()), {"model": {"profile": self.family}})
        flags = {"model": self.checkpoint, "revision": self.revision, "device": self.device_name}
        try:
            return build_run_config(None, flags, config=sections)
        except (ValueError, TypeError) as exc:
            raise DownstreamError(f"{self.cache_path}: the recorded configuration cannot be used "
                                  f"({_first_line(exc)})") from None

    def _compress(self, references: Sequence[str]) -> None:
        from aot_cli.models import ModelLoadError, load_model
        from aot_cli.pipeline.batch import run_batch
        from aot_cli.pipeline.inputs import InputError, expand_inputs
        from aot_cli.pipeline.ranks import RankInfo

        items = []
        taken = set(self.cache.ids()) if self.cache is not None else set()
        files = set()
        for ref in references:
            if not Path(ref).is_file():
                raise DownstreamError(f"{ref}: video not in the cache {self.cache_path} and no such file to compress")
            if Path(ref).resolve() in files:
                continue  # another name of a file already queued: found by its path afterwards
            files.add(Path(ref).resolve())
            try:
                item = expand_inputs([ref])[0]
            except InputError as exc:
                raise DownstreamError(_first_line(exc)) from None
            if item.video_id in taken:  # that id holds another video (same name, other content)
                item.video_id = str(Path(ref).resolve())
            taken.add(item.video_id)
            items.append((ref, item))
        if self._adapter is None:
            cfg = self.compress_config()
            try:
                adapter = load_model(cfg.model)
                if adapter.profile.name != self.family:  # recorded "auto", and this path names another family
                    cfg.model = dataclasses.replace(cfg.model, profile=self.family)
                    adapter = load_model(cfg.model)
            except ModelLoadError as exc:
                raise DownstreamError(_first_line(exc)) from None
            self._adapter, self._compress_cfg = adapter, cfg
        cfg = self._compress_cfg
        by_id = {item.video_id: ref for ref, item in items}
        events: List[dict] = []
        try:
            summary = run_batch([item for _, item in items], self.cache_path, cfg, adapter=self._adapter,
                                rank=RankInfo(self.rank[0], self.rank[1], "lmms-eval"),
                                decode_workers=self.decode_workers, on_event=events.append)
        except CacheError as exc:
            raise DownstreamError(_first_line(exc)) from None
        for event in events:
            if event.get("status") == "ok":
                self.compressed_ids.append(str(event["id"]))
                self._write({"event": "compressed", "video": by_id.get(str(event["id"])), "cache_id": event["id"],
                             "tokens": event.get("tokens"), "frames": event.get("frames")})
        if summary.failed:
            failure = summary.failures[0]
            raise DownstreamError(f"{by_id.get(failure['id'], failure['path'])}: could not be compressed "
                                  f"({failure['status']}: {failure['error']})")
        if self.cache is None:
            self.cache = TokenCache(self.cache_path)
            self.lookup = VideoLookup(self.cache)
        else:
            self.cache.refresh()
            self.lookup.refresh()
        self.last_compression = summary

    # ------------------------------------------------------------------------------ answering
    def _inputs(self, prompt: str, reference: Optional[str]) -> Tuple[Inputs, Used]:
        """One request's model inputs (batch of one) and what they hold."""
        if reference is None:
            inputs = self.consumer.text(self.model, self.text_side, prompt)
            return inputs, Used(None, None, 0, int(inputs["attention_mask"].shape[1]))
        match = self.prepare([reference])[str(reference)]
        video = self.cache[match.video_id]
        inputs = model_inputs(self.model, self.text_side, prompt, video)
        return inputs, Used(match.video_id, match.rule, int(video.shapes["tokens"][0]),
                            int(inputs["attention_mask"].shape[1]))

    def _batch(self, built: Sequence[Inputs]) -> Inputs:
        if len(built) == 1:
            return built[0]
        if self.consumer.collate is None:
            raise DownstreamError(f"{self.family} models answer one request at a time (batch size 1)")
        return self.consumer.collate(built)

    @torch.inference_mode()
    def generate_batch(self, requests: Sequence[Tuple[str, Optional[str], Mapping[str, Any]]], *,
                       max_new_tokens: int = 1024, until: Sequence[str] = (),
                       generation: Optional[Mapping[str, Any]] = None) -> List[Tuple[str, Used]]:
        """Answers to several ``(prompt, video reference or None, record context)`` requests in one
        left-padded ``generate`` call (the same generation settings for all): per request the text,
        cut before the first of the ``until`` strings, and what was fed to the LLM. With greedy
        decoding each answer is the one :meth:`generate` gives alone (padding is masked and the
        positions follow the mask). Raises :class:`DownstreamError` for several requests when the
        family cannot batch (:attr:`can_batch`)."""
        if not requests:
            return []
        built = [self._inputs(prompt, reference) for prompt, reference, _ in requests]
        texts, _ = generate_texts(self.model, self.text_side, self._batch([inputs for inputs, _ in built]),
                                  max_new_tokens=max_new_tokens, generation=generation)
        answers = []
        for (_, reference, context), (_, used), text in zip(requests, built, texts):
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            self._write({"request": "generate_until", **dict(context or {}), "video": reference,
                         "cache_id": used.video_id, "rule": used.rule, "video_tokens": used.video_tokens,
                         "prompt_tokens": used.prompt_tokens, "batch": len(requests)})
            answers.append((text, used))
        return answers

    def generate(self, prompt: str, reference: Optional[str], *, max_new_tokens: int = 1024,
                 until: Sequence[str] = (), generation: Optional[Mapping[str, Any]] = None,
                 context: Optional[Mapping[str, Any]] = None) -> Tuple[str, Used]:
        """The answer to ``prompt`` about the video ``reference`` names (None: no video),
        cut before the first of the ``until`` strings, and what was fed to the LLM. ``generation``:
        extra ``model.generate`` arguments (greedy by default). ``context``: fields added to the
        record line (e.g. task and doc id)."""
        return self.generate_batch([(prompt, reference, context or {})], max_new_tokens=max_new_tokens, until=until,
                                   generation=generation)[0]

    @torch.inference_mode()
    def loglikelihood_batch(self, requests: Sequence[Tuple[str, str, Optional[str], Mapping[str, Any]]]
                            ) -> List[Tuple[float, bool, Used]]:
        """``(mean negative log-likelihood per continuation token, greedy, used)`` for each
        ``(prompt, continuation, video reference or None, record context)`` request, the
        continuation right after the prompt's generation turn, all in one left-padded forward pass.
        The mean negative log-likelihood is the loss lmms-eval's own LLaVA models return (its
        multiple-choice scoring takes the choice with the smallest value)."""
        if not requests:
            return []
        tokenizer = text_tokenizer(self.text_side)
        conts = []
        for _, continuation, _, _ in requests:
            ids = torch.tensor(tokenizer(continuation, add_special_tokens=False)["input_ids"], dtype=torch.long)
            if ids.numel() == 0:
                raise DownstreamError(f"continuation {continuation!r} has no tokens")
            conts.append(ids)
        built = [self._inputs(prompt, reference) for prompt, _, reference, _ in requests]
        if len(built) > 1 and self.consumer.collate is None:
            raise DownstreamError(f"{self.family} models answer one request at a time (batch size 1)")
        scores = score_continuations(self.model, [inputs for inputs, _ in built], conts, extend=self.consumer.extend,
                                     collate=self.consumer.collate)
        results = []
        for (_, _, reference, context), (_, used), cont, (logprobs, greedy) in zip(requests, built, conts, scores):
            nll = float(-logprobs.mean())
            self._write({"request": "loglikelihood", **dict(context or {}), "video": reference,
                         "cache_id": used.video_id, "rule": used.rule, "video_tokens": used.video_tokens,
                         "prompt_tokens": used.prompt_tokens, "continuation_tokens": int(cont.numel()),
                         "batch": len(requests)})
            results.append((nll, greedy, used))
        return results

    def loglikelihood(self, prompt: str, continuation: str, reference: Optional[str], *,
                      context: Optional[Mapping[str, Any]] = None) -> Tuple[float, bool, Used]:
        """:meth:`loglikelihood_batch` of one request."""
        return self.loglikelihood_batch([(prompt, continuation, reference, context or {})])[0]

    # ------------------------------------------------------------------------------ record
    def _write(self, line: Mapping[str, Any]) -> None:
        if self._record is not None:
            self._record.write(json.dumps(dict(line), default=str) + "\n")
            self._record.flush()

    def close(self) -> None:
        """Close the record file and the cache."""
        if self._record is not None:
            self._record.close()
            self._record = None
        if self.cache is not None:
            self.cache.close()


__all__ = ["CachedVideoLLM", "Used", "ON_MISS"]
