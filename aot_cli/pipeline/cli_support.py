"""`aot compress` behind the Click command: the flag table, the checks that need the inputs, the
output and the model (all before anything runs), and the run with progress and a summary. Kept
out of cli.py so the CLI stays a thin shell. The configuration itself is built and checked by
:func:`aot_cli.pipeline.settings.build_settings`, shared by every command."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

# flag name (underscored) -> (section, field). Every flag here is also a config-file key (dashed or
# underscored); add one line per new flag.
FLAG_FIELDS = {
    "ratio": ("method", "ratio"), "method": ("method", "method"), "anchors": ("method", "num_anchors"),
    "keep_ratio": ("method", "keep_ratio"), "global_ratio": ("method", "global_ratio"), "window": ("method", "window"),
    "pooling": ("method", "pooling"), "no_inter": ("method", "inter"),
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
    "stream": ("decode", "stream"),
    "decoder_log": ("decode", "decoder_log"),
    "frame_limit": ("decode", "frame_limit"),
    "pixel_limit": ("decode", "pixel_limit"),
    "seek": ("decode", "seek"),
    "decode_size": ("decode", "size"),
    "model": ("model", "model"), "revision": ("model", "revision"), "profile": ("model", "profile"),
    "device": ("model", "device"), "dtype": ("model", "dtype"), "batch_frames": ("model", "batch_frames"),
    "score_layers": ("model", "score_layers"),
    "save_dtype": ("storage", "save_dtype"), "shard_size": ("storage", "shard_size"),
}


def build_run_config(config_file: Optional[str], flags: Dict[str, Any], *, config: Optional[Dict[str, Any]] = None):
    """The checked RunConfig of ``flags`` over the config file ``config_file`` (path or None) or
    an already parsed ``config`` (sections decode/model/method/storage, e.g. a cache's recorded
    ``meta["config"]``); UsageError (a ValueError, one line) when they are invalid. See
    :func:`aot_cli.pipeline.settings.build_settings`."""
    from .settings import build_settings

    return build_settings(config_file, flags, config=config).cfg


def quiet_transformers() -> None:
    """Silence transformers' load reports and progress bars (the command line prints its own
    one-line messages). Called just before a command loads a model."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def default_output(items, output: Optional[str]) -> tuple:
    """(output path, single_file); UsageError when a ``.safetensors`` output is given several
    videos."""
    from .settings import UsageError

    if output is not None:
        p = Path(output)
        single = p.suffix.lower() == ".safetensors"
        if single and len(items) > 1:
            raise UsageError(f"-o {p}: a .safetensors output holds one video, got {len(items)}; give a directory")
        return p, single
    if len(items) == 1:
        stem = Path(items[0].path).name
        return Path(stem.rsplit(".", 1)[0] + ".aot.safetensors"), True
    return Path("aot-cache"), False


def check_output(out: Path, single: bool) -> None:
    """Refuse an output that cannot be used, before anything runs: a file where a cache
    directory should be (or the reverse), an existing file that aot did not write (never replaced,
    not even with ``--overwrite``) or a cache's shard, a directory that is neither empty nor a
    cache, a new output whose parent is a file or not writable. UsageError naming ``-o``. (An
    existing output is not required to be writable: a rerun may have nothing to write.)"""
    from ..cache.layout import MANIFEST, allowed_in_new_cache
    from .settings import UsageError

    what = "-o " + str(out)
    if out.is_symlink() and not out.exists():
        raise UsageError(f"{what}: a dangling symbolic link")
    if out.exists():
        if single:
            if not out.is_file():
                raise UsageError(f"{what}: exists and is not a file; a .safetensors output is one file")
            _check_own_file(out, what)
            return  # an earlier output: a rerun may have nothing to write (the writer reports write errors)
        if not out.is_dir():
            raise UsageError(f"{what}: exists and is not a cache directory (give a new or existing cache "
                             "directory, or a .safetensors file for one video)")
        try:
            names = os.listdir(out)
        except OSError as e:
            raise UsageError(f"{what}: cannot list it ({e.strerror or e})") from None
        if MANIFEST not in names and not all(allowed_in_new_cache(n) for n in names):
            raise UsageError(f"{what}: a directory that is neither empty nor an aot cache (no {MANIFEST})")
        return
    parent = Path(os.path.abspath(out)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{what}: cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: cannot be created: {parent} is not writable")


def _check_own_file(out: Path, what: str) -> None:
    """Refuse to write over a file aot did not write (a model's weights as ``-o model.safetensors``:
    never replaced, whatever the flags) or over a shard inside a cache directory."""
    from ..cache.format import file_kind
    from .settings import UsageError

    try:
        kind = file_kind(out)
    except OSError as e:
        raise UsageError(f"{what}: cannot read it ({e.strerror or e})") from None
    if kind == "foreign":
        raise UsageError(f"{what}: exists and is not an aot output (a safetensors file without aot metadata, or not "
                         "safetensors at all); aot never replaces a file it did not write: choose another -o or move "
                         "the file away")
    if kind == "shard":
        raise UsageError(f"{what}: is a shard inside an aot cache directory; give the cache directory as -o")


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


@dataclass
class CompressPlan:
    """Everything `aot compress` checked before it runs: settings, this rank's videos, inputs
    already known to fail, the output, the model (resolved, not loaded) and the fingerprint."""

    settings: Any
    items: List[Any]
    failures: List[Tuple[Any, str, str]]
    scan: Any
    output: Path
    single: bool
    rank: Any
    model: Any
    fingerprint: str


def prepare_compress(*, inputs: Sequence[str], output: Optional[str], list_file: Optional[str],
                     manifest: Optional[str], path_column: str, id_mode: str, config_file: Optional[str],
                     flags: Dict[str, Any], num_shards: Optional[int], shard_id: Optional[int]) -> CompressPlan:
    """All of `aot compress`'s checks, in the order a user fixes them: configuration, ranks,
    inputs, output, model (resolved without loading: the hub is asked at most once, briefly),
    budget. Raises UsageError, InputError or ModelLoadError (one line each); creates nothing."""
    from .inputs import escape_bytes, scan_inputs, url_refusal, url_scheme
    from .ranks import detect_rank, device_for_rank, take_share
    from .runconfig import config_fingerprint
    from .settings import UsageError, build_settings, check_budget, resolve_model

    settings = build_settings(config_file, flags)
    if output is not None and url_scheme(output):
        raise UsageError(url_refusal(output, "the output", subject=f"-o {escape_bytes(output)}"))
    try:
        rank = detect_rank(num_shards, shard_id)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not inputs and list_file is None and manifest is None:
        raise UsageError("no input videos (give files, directories, globs, --list or --manifest)")
    scan = scan_inputs(inputs, list_file, manifest, path_column, id_mode)
    if not scan.items and not scan.failures:
        ignored = f" (ignored {scan.ignored_count} file(s) without a video extension)" if scan.ignored_count else ""
        raise UsageError(f"the inputs contain no video files{ignored}")
    out, single = default_output(scan.items + [f[0] for f in scan.failures], output)
    if single and rank.world > 1:
        raise UsageError(f"-o {out}: a .safetensors output holds one video; with {rank.world} parts "
                         f"({rank.source}) give a cache directory")
    if settings.engine.name == "ray":
        if single:
            raise UsageError(f"-o {out}: --engine ray writes a cache directory; give one with -o")
        if rank.world > 1:
            raise UsageError(f"--engine ray: the ray engine spreads the videos over its actors itself; run one "
                             f"command, without a split into {rank.world} parts ({rank.source})")
    check_output(out, single)
    cfg = settings.cfg
    if cfg.model.device == "auto" and rank.local_rank is not None:  # a launcher's rank picks its GPU
        cfg.model = dataclasses.replace(cfg.model, device=device_for_rank(cfg.model.device, rank, _cuda_count()))
    model = resolve_model(settings)
    check_budget(settings, model.profile, model.grid)
    return CompressPlan(settings=settings, items=take_share(scan.items, rank),
                        failures=take_share(scan.failures, rank, key=lambda f: f[0].video_id),
                        scan=scan, output=out, single=single, rank=rank, model=model,
                        fingerprint=config_fingerprint(cfg, model.identity))


def run_compress(*, inputs, output, list_file, manifest, path_column, id_mode, config_file, flags) -> int:
    """`aot compress`: returns the exit status (0 all done, 1 some videos failed, 2 bad usage or
    the output cannot be written, 128 + signal number when interrupted). Every exit path stops
    the decode workers; no exception escapes as a traceback. A rerun with nothing to do ends
    after the checks and the resume plan, without importing torch, the model or the decoder."""
    import time

    from ..cache.errors import CacheError
    from ..models.errors import ModelLoadError
    from .inputs import InputError
    from .progress import Reporter, print_error, printable
    from .changes import run_settings
    from .resume import Summary, plan_resume, report_skipped
    from .settings import UsageError

    jsonl = bool(flags.pop("jsonl", False))
    quiet = bool(flags.pop("quiet", False))
    overwrite = bool(flags.pop("overwrite", False))
    num_shards, shard_id = flags.pop("num_shards", None), flags.pop("shard_id", None)
    summary = Summary()
    reporter: Optional[Reporter] = None
    plan: Optional[CompressPlan] = None
    pool = None
    # printed as one line and exit 2; the decode pool's start-up error joins once it is imported
    one_line_errors: List[type] = [UsageError, InputError, ModelLoadError, CacheError]

    def err(msg: object) -> int:
        if reporter is not None and plan is not None and (summary.done or summary.failed or summary.skipped):
            reporter.summary(summary, plan.output, plan.rank)
        print_error(msg)
        return 2

    with termination_raises():
        try:
            t_start = time.perf_counter()
            plan = prepare_compress(inputs=inputs, output=output, list_file=list_file, manifest=manifest,
                                    path_column=path_column, id_mode=id_mode, config_file=config_file, flags=flags,
                                    num_shards=num_shards, shard_id=shard_id)
            settings, cfg = plan.settings, plan.settings.cfg
            summary.ignored, summary.ignored_count = plan.scan.ignored, plan.scan.ignored_count
            reporter = Reporter(total=len(plan.items) + len(plan.failures), jsonl=jsonl, quiet=quiet)
            resume = plan_resume(plan.items, plan.output, plan.fingerprint, overwrite,
                                 settings=run_settings(cfg, plan.model.identity))
            if plan.items and not resume.todo and not plan.failures:
                with reporter:  # nothing to do: every video is cached with this content and configuration
                    report_skipped(resume, plan.items, summary, reporter.event)
                    summary.seconds = time.perf_counter() - t_start
                reporter.summary(summary, plan.output, plan.rank)
                return 0
            for line in resume.notes:
                reporter.say(printable(line))

            # the ray engine when there is a video to compute (recording only failures needs no
            # cluster: the local path below writes them)
            if settings.engine.name == "ray" and resume.todo:
                from .ray_engine import RayEngineError, run_ray

                one_line_errors.append(RayEngineError)
                with reporter:
                    run_ray(plan.items, plan.output, settings, fingerprint=plan.fingerprint,
                            model_source=plan.model.source, resume=resume, failures=plan.failures,
                            summary=summary, emit=reporter.event,
                            note=lambda line: reporter.say(printable(line)))
                reporter.summary(summary, plan.output, plan.rank)
                return 1 if summary.failed else 0

            from .batch import run_batch
            from .workers import DecodePool, DecodeWorkerError, default_workers, tower_on_cpu

            one_line_errors.append(DecodeWorkerError)
            workers = settings.decode_workers
            if workers is None:
                workers = default_workers(tower_on_cpu(cfg.model.device))
            pool = DecodePool(workers, timeout=cfg.decode.timeout)

            def load():
                return load_checked(settings, plan.model.source)

            with reporter:
                run_batch(plan.items, plan.output, cfg, rank=plan.rank, overwrite=overwrite, single_file=plan.single,
                          pool=pool, flush_every=settings.flush_every, summary=summary, on_event=reporter.event,
                          fingerprint=plan.fingerprint, model_source=plan.model.source, failures=plan.failures,
                          load_adapter=load, resume=resume, on_progress=reporter.finished)
        except tuple(one_line_errors) as e:
            return err(e)
        except (KeyboardInterrupt, Interrupted) as e:
            if pool is not None:
                pool.close()
            if reporter is not None and plan is not None:
                reporter.summary(summary, plan.output, plan.rank)
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            name = signal.Signals(signum).name
            print_error(f"interrupted ({name}): the {summary.done} videos this run committed are kept; rerun "
                        "the same command to resume")
            return 128 + int(signum)
        except Exception as e:  # noqa: BLE001 - a bug or an unforeseen library error: one line, no hang
            return err(f"unexpected {type(e).__name__}: {e}")
        finally:
            if pool is not None:
                pool.close()
    reporter.summary(summary, plan.output, plan.rank)
    return 1 if summary.failed else 0


def load_checked(settings, source):
    """Load the model of ``settings`` from its resolved ``source`` (transformers kept quiet) and
    check the ``--ratio`` against its tower grid (UsageError, ModelLoadError: one line). What
    every engine calls once per process that runs the tower."""
    from ..models import load_model
    from .settings import check_budget

    quiet_transformers()
    adapter = load_model(settings.cfg.model, source)
    check_budget(settings, adapter.profile, _fixed_grid(adapter))
    return adapter


def _fixed_grid(adapter) -> Optional[Tuple[int, int]]:
    """The adapter's tower grid when it does not follow the frame size, else None."""
    try:
        grid = adapter.grid
    except ValueError:
        return None
    return (int(grid[0]), int(grid[1])) if grid is not None else None


def _cuda_count() -> int:
    from ..devices import gpu_driver_present

    if not gpu_driver_present():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
