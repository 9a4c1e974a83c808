"""``aot sweep`` behind the Click command: check everything, load the model once, sweep every video
(the same inputs as ``aot compress``: files, directories, globs, ``--list``, ``--manifest``),
print the per-video rows and the dataset summary (or JSON), draw the plot.

Exit status: 0 every video swept; 1 some video could not be read or decoded (one line each, the
others are swept); 2 bad flags, inputs or model (before anything runs), or a picture that cannot
be made."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional, Sequence

EXIT_FAILED = 1
EXIT_USAGE = 2


def run_sweep_command(*, inputs: Sequence[str], list_file: Optional[str], manifest: Optional[str], path_column: str,
                      ratios: str, references: str, methods: str, fidelity: bool, plot_png: Optional[str],
                      as_json: bool, config_file: Optional[str], flags: Dict[str, Any]) -> int:
    from ..core.fidelity import FIDELITY_EXTRA, FidelityError, require_pot
    from ..models import ModelLoadError, load_model
    from ..pipeline.cli_support import quiet_transformers
    from ..pipeline.inputs import InputError, scan_inputs
    from ..pipeline.progress import print_error
    from ..pipeline.settings import UsageError, build_settings, resolve_model
    from ..video import VideoDecodeError
    from .output import PictureError, one_line
    from .sweep import parse_methods, parse_ratios, parse_references, run_sweep, sweep_title
    from .sweep_report import DatasetSweep, mean_points, print_dataset, summarize

    try:
        ratio_list, rules, names = parse_ratios(ratios), parse_references(references), parse_methods(methods)
        settings = build_settings(config_file, flags)
        if not inputs and list_file is None and manifest is None:
            raise UsageError("no input videos (give files, directories, globs, --list or --manifest)")
        scan = scan_inputs(inputs, list_file, manifest, path_column, "path")
        if not scan.items and not scan.failures:
            raise UsageError(f"{' '.join(inputs) or list_file or manifest}: no video files")
        if plot_png:
            from .plots import require_matplotlib

            require_matplotlib()
        ot = fidelity
        if fidelity:
            try:
                require_pot()
            except FidelityError:
                ot = False
                print(f"aot: note: the OT error column is left out: it needs POT ({FIDELITY_EXTRA})", file=sys.stderr)
        model = resolve_model(settings)
        quiet_transformers()
        adapter = load_model(settings.cfg.model, model.source)
    except (ValueError, InputError, ModelLoadError, PictureError) as exc:
        print_error(exc)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print_error(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_USAGE
    reports, failed = [], [(item.video_id, error) for item, _, error in scan.failures]
    for item in scan.items:
        try:
            reports.append(run_sweep(item.path, ratio_list, settings.cfg, references=rules, adapter=adapter,
                                     methods=names, fidelity=fidelity, ot=ot))
        except (VideoDecodeError, ValueError, RuntimeError, OSError) as exc:
            failed.append((item.video_id, one_line(exc)))
    dataset = DatasetSweep(reports, failed, summarize(reports), ot_error=ot)
    if as_json:
        print(json.dumps(dataset.to_dict(), indent=2))
    else:
        print_dataset(dataset)
    if plot_png and reports:
        from .plots import plot_ratio_sweep

        try:
            if len(reports) == 1:
                path = plot_ratio_sweep(reports[0].points, plot_png, title=sweep_title(reports[0]))
            else:
                path = plot_ratio_sweep(mean_points(dataset), plot_png,
                                        title=f"mean over {len(reports)} videos (model {reports[0].model})")
        except PictureError as exc:
            print_error(exc)
            return EXIT_USAGE
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_FAILED if failed or not reports else 0
