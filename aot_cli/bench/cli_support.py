"""``aot bench`` behind the Click command: build the run configuration the way ``aot compress``
does, load the model once, run :func:`run_bench`, print and write the report."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..pipeline.progress import error_line
from .report import render_report
from .runner import run_bench

EXIT_USAGE = 2


def _err(msg: object) -> int:
    print(error_line(msg), file=sys.stderr)
    return EXIT_USAGE


def write_json(report: dict, path: str) -> None:
    """The report as JSON to ``path`` (atomically), or to stdout for ``-``."""
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    from ..cache import atomic_write_bytes

    atomic_write_bytes(Path(path), text.encode())


def run_bench_command(*, inputs: Sequence[str], config_file: Optional[str], flags: Dict[str, Any],
                      json_path: Optional[str], workdir: Optional[str], repeat: int, warmup: bool,
                      quiet: bool) -> int:
    """Run ``aot bench``; returns the exit code (0 ok, 1 a video failed, 2 bad usage). Flags, the
    config file, the inputs, the model (resolved, not loaded) and the budget are checked by the
    same step as ``aot compress`` before anything runs."""
    from ..cache import CacheError
    from ..models import ModelLoadError, load_model
    from ..pipeline.cli_support import _fixed_grid, quiet_transformers
    from ..pipeline.inputs import InputError, scan_inputs
    from ..pipeline.progress import printable
    from ..pipeline.settings import UsageError, build_settings, check_budget, resolve_model
    from ..video import VideoDecodeError

    if repeat < 1:
        return _err(f"--repeat: must be >= 1, got {repeat}")
    try:
        settings = build_settings(config_file, flags)
        cfg = settings.cfg
        scan = scan_inputs(list(inputs))
        if scan.failures:
            return _err(scan.failures[0][2])
        if not scan.items:
            return _err("no input videos (give video files, directories or globs)")
        if workdir is not None and Path(workdir).exists() and not Path(workdir).is_dir():
            raise UsageError(f"-o {workdir}: exists and is not a directory")
        model = resolve_model(settings)
        check_budget(settings, model.profile, model.grid)
        quiet_transformers()
        adapter = load_model(cfg.model, model.source)
        check_budget(settings, adapter.profile, _fixed_grid(adapter))
    except (UsageError, InputError, ModelLoadError) as e:
        return _err(e)
    log = (lambda msg: None) if quiet else (lambda msg: print(f"aot bench: {printable(msg)}", file=sys.stderr,
                                                              flush=True))
    try:
        report = run_bench(scan.items, adapter, cfg, repeat=repeat, warmup=warmup,
                           decode_workers=settings.decode_workers, flush_every=settings.flush_every,
                           workdir=Path(workdir) if workdir else None, log=log)
    except (VideoDecodeError, RuntimeError, CacheError) as e:
        print(error_line(str(e).splitlines()[0] if str(e) else type(e).__name__), file=sys.stderr)
        return 1
    except ValueError as e:
        return _err(e)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        return _err(f"unexpected {type(e).__name__}: {e}")
    if json_path:
        try:
            write_json(report, json_path)
        except (OSError, CacheError) as e:
            return _err(f"{json_path}: cannot write the report ({e})")
    if json_path != "-":
        print(render_report(report))
    return 0
