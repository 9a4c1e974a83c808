"""Building a RunConfig from defaults, a config file and flags; running `aot compress` with
progress and a summary. Kept out of cli.py so the CLI stays a thin shell."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from ..config import DecodeConfig, ModelConfig, StorageConfig, from_dict
from ..core import AOTConfig

# flag name -> (section, field)
FLAG_FIELDS = {
    "ratio": ("method", "ratio"), "method": ("method", "method"), "num_anchors": ("method", "num_anchors"),
    "keep_ratio": ("method", "keep_ratio"), "global_ratio": ("method", "global_ratio"), "window": ("method", "window"),
    "preset": ("method", "preset"),
    "seed": ("method", "seed"),
    "clip_length": ("method", "clip_length"), "segments": ("method", "segments"), "dynamic_c": ("method", "dynamic_c"),
    "dynamic_tau": ("method", "dynamic_tau"), "keyframe_once": ("method", "keyframe_once"),
    "intra_update": ("method", "intra_update"), "intra_stop": ("method", "intra_stop"),
    "sinkhorn_iters": ("method", "sinkhorn_max_iter"), "sinkhorn_tol": ("method", "sinkhorn_tol"),
    "log_domain": ("method", "log_domain"),
    "frames": ("decode", "frames"), "fps": ("decode", "fps"), "max_frames": ("decode", "max_frames"),
    "start": ("decode", "start"), "end": ("decode", "end"), "decoder": ("decode", "decoder"),
    "decode_timeout": ("decode", "timeout"),
    "model": ("model", "model"), "revision": ("model", "revision"), "profile": ("model", "profile"),
    "device": ("model", "device"), "dtype": ("model", "dtype"), "batch_frames": ("model", "batch_frames"),
    "score_layers": ("model", "score_layers"),
    "save_dtype": ("storage", "save_dtype"), "shard_size": ("storage", "shard_size"),
}


def build_run_config(file_cfg: Dict[str, Dict[str, Any]], flags: Dict[str, Any],
                     size_parser: Callable[[str], int] = int):
    """defaults < config file < flags. Returns a RunConfig."""
    from .run import RunConfig

    sections: Dict[str, Dict[str, Any]] = {k: dict(v) for k, v in file_cfg.items()}
    for flag, value in flags.items():
        if flag in FLAG_FIELDS and value is not None:
            sec, name = FLAG_FIELDS[flag]
            sections.setdefault(sec, {})[name] = value
    method = sections.get("method", {})
    if flags.get("no_inter"):
        method["inter"] = False
    pooling_flag = flags.get("pooling") or "auto"
    auto_pooling = pooling_flag == "auto" and "pooling" not in method
    if pooling_flag != "auto":
        method["pooling"] = None if pooling_flag == "none" else pooling_flag
    auto_clip = "clip_length" not in method
    explicit = method.get("num_anchors") is not None or method.get("keep_ratio") is not None
    if method.get("method") == "none":
        if method.get("ratio") not in (None, 1.0) or explicit:
            raise ValueError("--method none keeps every token; drop --ratio/--anchors/--keep-ratio or pass --ratio 1.0")
        method["ratio"] = None
    elif method.get("ratio") is None and not explicit:
        method["ratio"] = 0.1
    model = sections.get("model", {})
    if isinstance(model.get("score_layers"), str):
        try:
            model["score_layers"] = tuple(int(x) for x in model["score_layers"].split(","))
        except ValueError:
            raise ValueError(f"--score-layers takes two integers like 5,-2, got {model['score_layers']!r}") from None
    storage = sections.get("storage", {})
    if isinstance(storage.get("shard_size"), str):
        storage["shard_size"] = size_parser(storage["shard_size"])
    cfg = RunConfig(decode=from_dict(DecodeConfig, sections.get("decode", {})),
                    model=from_dict(ModelConfig, model),
                    method=from_dict(AOTConfig, method),
                    storage=from_dict(StorageConfig, storage),
                    auto_pooling=auto_pooling, auto_clip_length=auto_clip)
    cfg.method.validate()  # one-line flag errors before any model load (issue 13; issue 10's central step supersedes it)
    return cfg


def default_output(items, output: Optional[str]) -> tuple:
    """(output path, single_file)."""
    if output is not None:
        p = Path(output)
        single = p.suffix.lower() == ".safetensors"
        if single and len(items) > 1:
            raise ValueError(f"{p}: a .safetensors output holds one video, got {len(items)}; give a directory")
        return p, single
    if len(items) == 1:
        stem = Path(items[0].path).name
        return Path(stem.rsplit(".", 1)[0] + ".aot.safetensors"), True
    return Path("aot-cache"), False


class Interrupted(Exception):
    """The run received a termination signal (SIGTERM, SIGHUP); ``signum`` is its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (once: a
    second signal during the cleanup that follows is ignored, so the final commit completes).
    Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.getsignal(s) for s in wanted}

    def handler(signum, frame):
        for s in wanted:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    for s in wanted:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def pop_pipeline_options(flags: Dict[str, Any]) -> Tuple[Optional[int], float]:
    """Take ``--decode-workers`` and ``--flush-every`` out of the flags: ``(decode_workers or None,
    flush_every seconds)``; ValueError (one line) when either is negative."""
    from .batch import DEFAULT_FLUSH_EVERY

    workers = flags.pop("decode_workers", None)
    flush_every = flags.pop("flush_every", None)
    flush_every = DEFAULT_FLUSH_EVERY if flush_every is None else flush_every
    if workers is not None and workers < 0:
        raise ValueError(f"--decode-workers must be >= 0, got {workers}")
    if flush_every < 0:
        raise ValueError(f"--flush-every must be >= 0 seconds, got {flush_every:g}")
    return workers, flush_every


def run_compress(*, inputs, output, list_file, manifest, path_column, id_mode, file_cfg, flags, size_parser) -> int:
    """`aot compress`: returns the exit status (0 all done, 1 some videos failed, 2 bad usage or
    the output cannot be written, 128 + signal number when interrupted)."""
    from ..cache import CacheError
    from ..models import ModelLoadError, load_model
    from .batch import Summary, run_batch
    from .inputs import InputError, expand_inputs
    from .progress import Reporter
    from .ranks import detect_rank, device_for_rank, take_share
    from .workers import DecodePool, DecodeWorkerError, default_workers

    def err(msg: str) -> int:
        print(f"aot: error: {msg}", file=sys.stderr)
        return 2

    jsonl = bool(flags.pop("jsonl", False))
    quiet = bool(flags.pop("quiet", False))
    overwrite = bool(flags.pop("overwrite", False))
    num_shards, shard_id = flags.pop("num_shards", None), flags.pop("shard_id", None)
    try:
        workers, flush_every = pop_pipeline_options(flags)
        cfg = build_run_config(file_cfg, flags, size_parser)
        if not inputs and list_file is None and manifest is None:
            return err("no input videos (give files, directories, globs, --list or --manifest)")
        items = expand_inputs(inputs, list_file, manifest, path_column, id_mode)
        if not items:
            return err("the inputs contain no video files")
        rank = detect_rank(num_shards, shard_id)
        mine = take_share(items, rank)
        out, single = default_output(items, output)
        if single and rank.world > 1:
            raise ValueError(f"{out}: a .safetensors output holds one video; with {rank.world} parts "
                             f"({rank.source}) give a cache directory")
    except (ValueError, InputError) as e:
        return err(str(e))
    cfg.model = dataclasses.replace(cfg.model, device=device_for_rank(cfg.model.device, rank, _cuda_count()))
    reporter = Reporter(total=len(mine), jsonl=jsonl, quiet=quiet)
    if workers is None:
        workers = default_workers(_processes_per_node())
    pool = DecodePool(workers, timeout=cfg.decode.timeout)
    summary = Summary()
    with termination_raises():
        try:
            if mine:
                pool.start()  # workers start while the model loads
            try:
                adapter = load_model(cfg.model)
            except ModelLoadError as e:
                pool.close()
                return err(str(e))
            with reporter:
                run_batch(mine, out, cfg, adapter=adapter, rank=rank, overwrite=overwrite, single_file=single,
                          pool=pool, flush_every=flush_every, summary=summary, on_event=reporter.event)
        except (CacheError, DecodeWorkerError) as e:
            reporter.summary(summary, out, rank)
            return err(str(e))
        except (KeyboardInterrupt, Interrupted) as e:
            pool.close()
            reporter.summary(summary, out, rank)
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            name = signal.Signals(signum).name
            print(f"aot: interrupted ({name}): the {summary.done} videos this run committed are kept; rerun "
                  "the same command to resume", file=sys.stderr)
            return 128 + int(signum)
    reporter.summary(summary, out, rank)
    return 1 if summary.failed else 0


def _processes_per_node() -> int:
    """Processes a launcher started on this node (they share its CPUs)."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
