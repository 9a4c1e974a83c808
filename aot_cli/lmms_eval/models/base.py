"""The lmms-eval model every aot family shares: answers from an aot token cache.

    python -m lmms_eval --model aot_llava_onevision \\
        --model_args pretrained=CKPT,cache=CACHE_DIR,on_miss=compress --tasks TASK --output_path results/

A family's model is a subclass naming itself (``MODEL_NAME``, a row of
:data:`aot_cli.lmms_eval.models.MODELS` with the cache profile it reads); how its checkpoint loads
and how a question and a cached video become the LLM's inputs is the family's consumer in
:data:`aot_cli.downstream.inputs.CONSUMERS`. The work is done by
:class:`aot_cli.downstream.evaluation.CachedVideoLLM`.

Model arguments (``--model_args key=value,...``):

- ``pretrained`` (required): the transformers checkpoint of the family's LLM (directory or hub id)
  whose vision side made the cache.
- ``cache`` (required): the cache directory (a single ``.safetensors`` file with ``on_miss=error``).
- ``on_miss``: ``error`` (default: a video the cache lacks stops the evaluation with one line
  naming it) or ``compress`` (it is compressed into the cache first, with the configuration the
  cache's videos were made with, and committed as ``aot compress`` commits).
- ``device`` (``auto``), ``dtype`` (``auto``: bf16 on CUDA, fp32 on CPU), ``revision``.
- ``record``: a JSONL file that gets one line per request (task, doc id, video, cache id, the
  lookup rule that found it, video and prompt token counts, batch size) and one per compressed video.
- ``provenance``: where the provenance JSON goes (default: beside lmms-eval's results, see
  :mod:`aot_cli.lmms_eval.provenance`).
- ``max_new_tokens``: default when the task's generation arguments give none (1024).
- ``decode_workers``: decode processes when compressing (default: as ``aot compress``).

``--batch_size N`` runs N requests with the same generation settings as one left-padded batch
(greedy answers equal those of batch size 1); ``auto`` is refused, and so is N > 1 for a family
that answers one request at a time. ``loglikelihood`` returns the mean negative log-likelihood per
continuation token, like lmms-eval's own LLaVA models (its multiple-choice scoring takes the
smallest); on an lmms-eval whose evaluator cannot keep such results (0.7.x) those requests stop
the run with one line instead of a wrong score. A bad cache, checkpoint or missing video stops the
run with one line on stderr and exit status 2.
"""
from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Dict, List, Optional, Tuple

from loguru import logger as eval_logger
from tqdm import tqdm

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from aot_cli.cache import CacheError
from aot_cli.downstream.errors import DownstreamError

from . import MODELS

ARGUMENTS = ("pretrained", "cache", "on_miss", "device", "dtype", "revision", "record", "provenance",
             "max_new_tokens", "decode_workers")


class EvaluationStopped(SystemExit):
    """Ends the evaluation (exit status 2) after its one-line reason was printed on stderr.
    A ``SystemExit`` so that lmms-eval's catch-all error handler (which prints a traceback and
    exits 0) lets it through."""


def loglikelihood_problem() -> Optional[str]:
    """Why the installed lmms-eval cannot keep loglikelihood results (None: it can). Tested on its
    behaviour: lmms-eval 0.7.x passes every model result through ``unwrap_generation_output``
    (``lmms_eval/evaluator.py``), which turns a ``(loglikelihood, is_greedy)`` pair into a string."""
    try:
        from lmms_eval.api.instance import unwrap_generation_output
    except ImportError:  # lmms-eval 0.6.x: results are stored as the model returns them
        return None
    kept, _ = unwrap_generation_output((-1.0, True))
    if isinstance(kept, tuple):
        return None
    from aot_cli.lmms_eval.provenance import installed_version

    return (f"lmms-eval {installed_version('lmms_eval') or '?'} turns every loglikelihood result into a string "
            "(unwrap_generation_output in lmms_eval/evaluator.py), so multiple-choice scores would be wrong for any "
            "model; run loglikelihood (multiple-choice) tasks with lmms-eval 0.6.x (pip install 'lmms-eval>=0.6,<0.7'); "
            "generation tasks work on this version")


def _positive_int(value: Any) -> Optional[int]:
    """``value`` as an integer of at least 1 (None when it is not one)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 1 and str(value).strip().lstrip("+").isdigit() else None


class AotCachedModel(lmms):
    """An lmms-eval model answering from cached tokens (see the module docstring). Subclasses set
    ``MODEL_NAME`` (a key of :data:`~aot_cli.lmms_eval.models.MODELS`)."""

    MODEL_NAME = ""

    def __init__(self, pretrained: Optional[str] = None, cache: Optional[str] = None, on_miss: str = "error",
                 device: Optional[str] = None, dtype: str = "auto", revision: Optional[str] = None,
                 record: Optional[str] = None, provenance: Optional[str] = None, max_new_tokens: int = 1024,
                 decode_workers: Optional[int] = None, batch_size: Any = 1, max_batch_size: Any = None,
                 **unknown: Any) -> None:
        super().__init__()
        from aot_cli.downstream.inputs import CONSUMERS

        self.family = MODELS[self.MODEL_NAME][1]
        if unknown:
            self._stop(f"unknown model argument(s) {', '.join(sorted(unknown))} (accepted: {', '.join(ARGUMENTS)})")
        if not pretrained or not cache:
            self._stop("--model_args needs pretrained=CHECKPOINT and cache=CACHE_DIR")
        self.max_new_tokens = _positive_int(max_new_tokens)
        if self.max_new_tokens is None:
            self._stop(f"max_new_tokens={max_new_tokens}: must be an integer of at least 1")
        self.batch_size = _positive_int(batch_size)
        if self.batch_size is None:
            self._stop(f"--batch_size {batch_size}: give a number of at least 1 (aot models do not search for a "
                       "batch size)")
        if self.batch_size > 1 and CONSUMERS[self.family].collate is None:
            self._stop(f"--batch_size {batch_size}: {self.family} models answer one request at a time; use "
                       "--batch_size 1")
        workers = None
        if decode_workers is not None:
            try:
                workers = int(decode_workers)
            except (TypeError, ValueError):
                workers = -1
            if workers < 0:
                self._stop(f"decode_workers={decode_workers}: must be an integer of at least 0")
        self._setup_processes(device)
        self.pretrained, self.revision = str(pretrained), None if revision is None else str(revision)
        self._run, provenance_path = self._provenance_path(provenance)
        from aot_cli.downstream.evaluation import CachedVideoLLM

        readers = {family: name for name, (_, family) in MODELS.items()}
        try:
            self.llm = CachedVideoLLM(str(pretrained), str(cache), family=self.family, on_miss=str(on_miss),
                                      device=self._device_name, dtype=str(dtype),
                                      revision=None if revision is None else str(revision),
                                      record=None if record is None else str(record), decode_workers=workers,
                                      rank=(self._rank, self._world_size), readers=readers)
        except (DownstreamError, CacheError) as exc:
            self._stop(str(exc))
        self.requests_done = 0
        self.video_tokens = 0
        self.provenance = None
        if provenance_path is not None:
            from aot_cli.lmms_eval.provenance import ProvenanceFile

            self.provenance = ProvenanceFile(provenance_path, self._provenance_static(self._run, provenance_path))

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

    def _provenance_path(self, target: Optional[str]) -> Tuple[Any, Optional[Any]]:
        """``(lmms-eval command line or None, where the provenance file goes or None)``: ``target``
        (``provenance=``) when given, else beside lmms-eval's results (None without
        ``--output_path``). Its directory is created now, so an unwritable place stops the run
        before the model loads."""
        import os
        from pathlib import Path

        from aot_cli.lmms_eval import provenance as prov

        run = prov.lmms_eval_cli(self.MODEL_NAME)
        if target is not None:
            path = Path(str(target))
        else:
            directory = prov.results_dir(run, self.pretrained) if run is not None else None
            if directory is None:
                eval_logger.info(f"{self.MODEL_NAME}: no --output_path, so no provenance file (add "
                                 "provenance=FILE to --model_args to write one)")
                return run, None
            rank = f"_rank{self._rank}" if self._world_size > 1 else ""
            path = directory / f"{prov.timestamp(getattr(run, 'timezone', None))}{rank}{prov.SUFFIX}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            problem = "is a directory" if path.is_dir() else None if os.access(path.parent, os.W_OK) else "not writable"
        except OSError as exc:
            problem = exc.strerror or str(exc)
        if problem is not None:
            self._stop(f"{path}: cannot write the provenance file there ({problem})")
        return run, path

    def _provenance_static(self, run: Any, path: Any) -> Dict[str, Any]:
        from aot_cli import __version__ as aot_version
        from aot_cli.lmms_eval.provenance import installed_version
        from aot_cli.models.errors import ModelLoadError
        from aot_cli.models.source import checkpoint_identity, resolve_source

        try:
            identity: Dict[str, Any] = checkpoint_identity(resolve_source(self.pretrained, self.revision))
        except ModelLoadError as exc:
            identity = {"error": str(exc)}
        if isinstance(identity.get("files"), dict):  # a directory: one digest of every file's hash or sample
            files = identity.pop("files")
            text = json.dumps(files, sort_keys=True).encode("utf-8")
            identity.update(files=len(files), sha256=hashlib.sha256(text).hexdigest())
        model = self.llm.model
        return {
            "aot_version": aot_version, "lmms_eval_version": installed_version("lmms_eval"),
            "lmms_eval": {"model": self.MODEL_NAME, "model_args": getattr(run, "model_args", None),
                          "tasks": getattr(run, "tasks", None), "results_dir": str(path.parent),
                          "batch_size": self.batch_size, "rank": self._rank, "world_size": self._world_size},
            "checkpoint": {"pretrained": self.pretrained, "revision": self.revision, "model_type": self.llm.model_type,
                           "class": type(model).__name__, "dtype": str(model.dtype).replace("torch.", ""),
                           "device": str(model.device), "identity": identity},
            "cache": {"path": str(self.llm.cache_path.resolve()), "family": self.family},
        }

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

    def _batches(self, keys: List[str]) -> List[List[int]]:
        """Request indices in batches of at most ``batch_size`` that share a key (their
        generation settings), in order of first appearance."""
        groups: Dict[str, List[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        return [indices[i:i + self.batch_size] for indices in groups.values()
                for i in range(0, len(indices), self.batch_size)]

    def _count(self, request_type: str, used: Any) -> None:
        self.requests_done += 1
        self.video_tokens += used.video_tokens
        if self.provenance is not None:
            self.provenance.add(request_type, used.video_id, used.video_tokens)

    def _record_provenance(self) -> None:
        if self.provenance is None:
            return
        try:
            path = self.provenance.write(self.llm.cache, self.llm.compressed_ids)
        except CacheError as exc:
            self._stop(f"cannot write the provenance file: {exc}")
        eval_logger.info(f"{self.MODEL_NAME}: provenance -> {path}")

    @staticmethod
    def _generation(gen_kwargs: Any, default_new: int) -> Tuple[int, List[str], Dict[str, Any]]:
        """``(max_new_tokens, until, extra generate arguments)`` from a task's generation arguments."""
        kwargs: Dict[str, Any] = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_new_tokens", None) or default_new)
        temperature = float(kwargs.pop("temperature", 0) or 0)
        sample = bool(kwargs.pop("do_sample", False)) or temperature > 0
        generation: Dict[str, Any] = {}
        if sample:
            generation = {"do_sample": True, "temperature": temperature or 1.0}
            if kwargs.get("top_p") is not None:
                generation["top_p"] = float(kwargs["top_p"])
        if int(kwargs.get("num_beams") or 1) > 1:
            generation["num_beams"] = int(kwargs["num_beams"])
        return max_new, until, generation

    def generate_until(self, requests: List[Instance]) -> List[str]:
        work = self._prepared(requests)
        settings = [self._generation(args[1], self.max_new_tokens) for args, _ in work]
        answers: List[Optional[str]] = [None] * len(work)
        batches = self._batches([json.dumps(s, sort_keys=True, default=str) for s in settings])
        for batch in tqdm(batches, disable=self._rank != 0, desc=f"{self.MODEL_NAME} generate"):
            max_new, until, generation = settings[batch[0]]
            items = [(work[i][0][0], work[i][1], {"task": work[i][0][4], "doc_id": work[i][0][3]}) for i in batch]
            try:
                results = self.llm.generate_batch(items, max_new_tokens=max_new, until=until, generation=generation)
            except (DownstreamError, CacheError) as exc:
                self._stop(str(exc))
            for i, (text, used) in zip(batch, results):
                self._count("generate_until", used)
                answers[i] = text
                self.cache_hook.add_partial("generate_until", (work[i][0][0], work[i][0][1]), text)
        self._summary()
        return [a if a is not None else "" for a in answers]

    def loglikelihood(self, requests: List[Instance]) -> List[Tuple[float, bool]]:
        problem = loglikelihood_problem()
        if problem is not None:
            tasks = sorted({str(r.args[4]) for r in requests if len(r.args) >= 6})
            self._stop(f"task(s) {', '.join(tasks) or '?'} ask for loglikelihood scores, but {problem}")
        work = self._prepared(requests)
        items = []
        for args, video in work:
            context, target = args[0], args[1]
            if len(args) >= 6 and not isinstance(target, str):
                target = target(self.task_dict[args[4]][args[5]][args[3]])
            where = {"task": args[4], "doc_id": args[3]} if len(args) >= 6 else {}
            items.append((str(context), str(target), video, where))
        results: List[Tuple[float, bool]] = []
        for start in tqdm(range(0, len(items), self.batch_size), disable=self._rank != 0,
                          desc=f"{self.MODEL_NAME} loglikelihood"):
            try:
                scored = self.llm.loglikelihood_batch(items[start:start + self.batch_size])
            except (DownstreamError, CacheError) as exc:
                self._stop(str(exc))
            for nll, greedy, used in scored:
                self._count("loglikelihood", used)
                results.append((nll, greedy))
        self._summary()
        return results

    def generate_until_multi_round(self, requests: List[Instance]) -> List[str]:
        self._stop("multi-round generation is not supported")

    def _summary(self) -> None:
        if self.requests_done:
            eval_logger.info(f"{self.MODEL_NAME}: {self.requests_done} request(s) answered from {self.llm.cache_path}, "
                             f"{self.video_tokens / self.requests_done:.1f} video tokens per request")
        self._record_provenance()

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
    def device(self) -> Any:
        return self.llm.model.device

    @property
    def tokenizer(self) -> Any:
        from aot_cli.downstream.llava import text_tokenizer

        return text_tokenizer(self.llm.text_side)
