"""``aot bench`` behind the Click command: build the run configuration the way ``aot compress``
does, load the model once, run :func:`run_bench`, print and write the report."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from .report import render_report
from .runner import run_bench

EXIT_USAGE = 2


def _err(msg: str) -> int:
    print(f"aot: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def write_json(report: dict, path: str) -> None:
    """The report as JSON to ``path`` (atomically), or to stdout for ``-``."""
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    from ..cache import atomic_write_bytes

    atomic_write_bytes(Path(path), text.encode())


def run_bench_command(*, inputs: Sequence[str], file_cfg: Dict[str, Dict[str, Any]], flags: Dict[str, Any],
                      json_path: Optional[str], workdir: Optional[str], repeat: int, warmup: bool, quiet: bool,
                      size_parser: Callable[[str], int] = int) -> int:
    """Run ``aot bench``; returns the exit code (0 ok, 1 a video failed, 2 bad usage)."""
    from ..cache import CacheError
    from ..models import ModelLoadError, load_model
    from ..pipeline.cli_support import build_run_config, pop_pipeline_options
    from ..pipeline.inputs import InputError, expand_inputs
    from ..video import VideoDecodeError

    if repeat < 1:
        return _err(f"--repeat must be >= 1, got {repeat}")
    try:
        workers, flush_every = pop_pipeline_options(flags)
        cfg = build_run_config(file_cfg, flags, size_parser)
        items = expand_inputs(list(inputs))
    except (ValueError, InputError) as e:
        return _err(str(e))
    if not items:
        return _err("no input videos (give video files, directories or globs)")
    try:
        adapter = load_model(cfg.model)
    except ModelLoadError as e:
        return _err(str(e))
    log = (lambda msg: None) if quiet else (lambda msg: print(f"aot bench: {msg}", file=sys.stderr, flush=True))
    try:
        report = run_bench(items, adapter, cfg, repeat=repeat, warmup=warmup, decode_workers=workers,
                           flush_every=flush_every,
                           workdir=Path(workdir) if workdir else None, log=log)
    except (VideoDecodeError, RuntimeError, CacheError) as e:
        print(f"aot: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    except ValueError as e:
        return _err(str(e))
    if json_path:
        try:
            write_json(report, json_path)
        except (OSError, CacheError) as e:
            return _err(f"{json_path}: cannot write the report ({e})")
    if json_path != "-":
        print(render_report(report))
    return 0
