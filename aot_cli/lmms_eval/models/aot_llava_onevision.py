"""``aot_llava_onevision``: an lmms-eval model that answers from an aot token cache.

    LMMS_EVAL_PLUGINS=aot_cli.lmms_eval python -m lmms_eval --model aot_llava_onevision \\
        --model_args pretrained=CKPT,cache=CACHE_DIR,on_miss=compress --tasks TASK

Model arguments (``--model_args key=value,...``):

- ``pretrained`` (required): the transformers LLaVA-OneVision checkpoint (``model_type``
  ``llava_onevision``; directory or hub id) whose vision side made the cache.
- ``cache`` (required): the cache directory (a single ``.safetensors`` file with ``on_miss=error``).
- ``on_miss``: ``error`` (default: a video the cache lacks stops the evaluation with one line
  naming it) or ``compress`` (it is compressed into the cache first, with the configuration the
  cache's videos were made with, and committed as ``aot compress`` commits).
- ``device`` (``auto``), ``dtype`` (``auto``: bf16 on CUDA, fp32 on CPU), ``revision``.
- ``record``: a JSONL file that gets one line per request (task, doc id, video, cache id, the
  lookup rule that found it, video and prompt token counts) and one per compressed video.
- ``max_new_tokens``: default when the task's generation arguments give none (1024).
- ``decode_workers``: decode processes when compressing (default: as ``aot compress``).

How a task's video is found in the cache: :mod:`aot_cli.downstream.lookup`. Requests run one at a
time (``--batch_size`` is accepted and ignored). ``loglikelihood`` returns the mean negative
log-likelihood per continuation token, like lmms-eval's own LLaVA models (its multiple-choice
scoring takes the smallest). A bad cache, checkpoint or missing video stops the run with one line
on stderr and exit status 2.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple

from loguru import logger as eval_logger
from tqdm import tqdm

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from aot_cli.cache import CacheError
from aot_cli.downstream.errors import DownstreamError


class EvaluationStopped(SystemExit):
    """Ends the evaluation (exit status 2) after its one-line reason was printed on stderr.
    A ``SystemExit`` so that lmms-eval's catch-all error handler (which prints a traceback and
    exits 0) lets it through."""


class AotLlavaOneVision(lmms):
    """LLaVA-OneVision answering from cached tokens (see the module docstring)."""

    MODEL_NAME = "aot_llava_onevision"
    FAMILY = "llava-onevision"

    def __init__(self, pretrained: Optional[str] = None, cache: Optional[str] = None, on_miss: str = "error",
                 device: Optional[str] = None, dtype: str = "auto", revision: Optional[str] = None,
                 record: Optional[str] = None, max_new_tokens: int = 1024, decode_workers: Optional[int] = None,
                 batch_size: Any = 1, max_batch_size: Any = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            self._stop(f"unknown model argument(s) {', '.join(sorted(unknown))} (accepted: pretrained, cache, "
                       "on_miss, device, dtype, revision, record, max_new_tokens, decode_workers)")
        if not pretrained or not cache:
            self._stop("--model_args needs pretrained=CHECKPOINT and cache=CACHE_DIR")
        try:
            self.max_new_tokens = int(max_new_tokens)
        except (TypeError, ValueError):
            self._stop(f"max_new_tokens={max_new_tokens}: not an integer")
        if self.max_new_tokens < 1:
            self._stop(f"max_new_tokens={max_new_tokens}: must be at least 1")
        workers = None
        if decode_workers is not None:
            try:
                workers = int(decode_workers)
            except (TypeError, ValueError):
                workers = -1
            if workers < 0:
                self._stop(f"decode_workers={decode_workers}: must be an integer of at least 0")
        self._setup_processes(device)
        from aot_cli.downstream.evaluation import CachedVideoLLM

        try:
            self.llm = CachedVideoLLM(str(pretrained), str(cache), family=self.FAMILY, on_miss=str(on_miss),
                                      device=self._device_name, dtype=str(dtype),
                                      revision=None if revision is None else str(revision),
                                      record=None if record is None else str(record), decode_workers=workers,
                                      rank=(self._rank, self._world_size))
        except (DownstreamError, CacheError) as exc:
            self._stop(str(exc))
        self.requests_done = 0
        self.video_tokens = 0

    # ------------------------------------------------------------------------------ setup
    def _stop(self, message: str) -> None:
        print(f"{self.MODEL_NAME}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
        raise EvaluationStopped(2)

    def _setup_processes(self, device: Optional[str]) -> None:
        """Rank and device under ``accelerate launch`` (each process takes its share of the
        documents, as with lmms-eval's own models); one process otherwise."""
        self._rank, self._world_size = 0, 1
        self._device_name = str(device) if device else "auto"
        try:
            from accelerate import Accelerator
        except ImportError:
            return
        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            self.accelerator = accelerator
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
            if not device:
                self._device_name = str(accelerator.device)

    # ------------------------------------------------------------------------------ requests
    def _video(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> Optional[str]:
        """The one video path a document names (None: a text-only document)."""
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if callable(doc_to_visual) else doc_to_visual
        if visuals is None:
            return None
        if not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        flat: List[Any] = []
        for item in visuals:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        flat = [v for v in flat if v is not None]
        if not flat:
            return None
        if len(flat) > 1 or not isinstance(flat[0], (str, bytes)) and not hasattr(flat[0], "__fspath__"):
            kinds = ", ".join(sorted({type(v).__name__ for v in flat}))
            self._stop(f"task {task} doc {doc_id} gives {len(flat)} visual(s) of type {kinds}; {self.MODEL_NAME} "
                       "reads one video per question, named by its file path")
        return str(flat[0].decode() if isinstance(flat[0], bytes) else flat[0])

    def _prepared(self, requests: List[Instance]) -> List[Tuple[Tuple[Any, ...], Optional[str]]]:
        """Each request's arguments and video; every video resolved (and, with
        ``on_miss=compress``, compressed) before the first one runs."""
        work = []
        for request in requests:
            args = tuple(request.args)
            video = self._video(args[2], args[3], args[4], args[5]) if len(args) >= 6 else None
            work.append((args, video))
        try:
            self.llm.prepare(video for _, video in work if video is not None)
        except (DownstreamError, CacheError) as exc:
            self._stop(str(exc))
        summary = self.llm.last_compression
        if summary is not None and summary.done:
            eval_logger.info(f"{self.MODEL_NAME}: compressed {summary.done} video(s) into {self.llm.cache_path} "
                             f"in {summary.seconds:.1f} s")
            self.llm.last_compression = None
        return work

    def _count(self, used: Any) -> None:
        self.requests_done += 1
        self.video_tokens += used.video_tokens

    def generate_until(self, requests: List[Instance]) -> List[str]:
        answers: List[str] = []
        work = self._prepared(requests)
        for args, video in tqdm(work, disable=self._rank != 0, desc=f"{self.MODEL_NAME} generate"):
            context, gen_kwargs, _, doc_id, task, _ = args
            kwargs: Dict[str, Any] = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_new_tokens", None) or self.max_new_tokens)
            temperature = float(kwargs.pop("temperature", 0) or 0)
            sample = bool(kwargs.pop("do_sample", False)) or temperature > 0
            generation: Dict[str, Any] = {}
            if sample:
                generation = {"do_sample": True, "temperature": temperature or 1.0}
                if kwargs.get("top_p") is not None:
                    generation["top_p"] = float(kwargs["top_p"])
            if int(kwargs.get("num_beams") or 1) > 1:
                generation["num_beams"] = int(kwargs["num_beams"])
            try:
                text, used = self.llm.generate(context, video, max_new_tokens=max_new, until=until,
                                               generation=generation, context={"task": task, "doc_id": doc_id})
            except (DownstreamError, CacheError) as exc:
                self._stop(str(exc))
            self._count(used)
            answers.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        self._summary()
        return answers

    def loglikelihood(self, requests: List[Instance]) -> List[Tuple[float, bool]]:
        results: List[Tuple[float, bool]] = []
        work = self._prepared(requests)
        for args, video in tqdm(work, disable=self._rank != 0, desc=f"{self.MODEL_NAME} loglikelihood"):
            context, target = args[0], args[1]
            if len(args) >= 6 and not isinstance(target, str):
                target = target(self.task_dict[args[4]][args[5]][args[3]])
            where = {"task": args[4], "doc_id": args[3]} if len(args) >= 6 else {}
            try:
                nll, greedy, used = self.llm.loglikelihood(str(context), str(target), video, context=where)
            except (DownstreamError, CacheError) as exc:
                self._stop(str(exc))
            self._count(used)
            results.append((nll, greedy))
        self._summary()
        return results

    def generate_until_multi_round(self, requests: List[Instance]) -> List[str]:
        self._stop("multi-round generation is not supported")

    def _summary(self) -> None:
        if self.requests_done:
            eval_logger.info(f"{self.MODEL_NAME}: {self.requests_done} request(s) answered from {self.llm.cache_path}, "
                             f"{self.video_tokens / self.requests_done:.1f} video tokens per request")

    # ------------------------------------------------------------------------------ lmms API
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def model(self) -> Any:
        return self.llm.model

    @property
    def tokenizer(self) -> Any:
        from aot_cli.downstream.llava import text_tokenizer

        return text_tokenizer(self.llm.text_side)
