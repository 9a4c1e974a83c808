"""A sweep over several videos (``aot sweep videos/``): per-video rows, the dataset summary (the
mean of every figure per method and setting) with the method that leads each figure at each ratio
marked, as tables and as JSON. The sweeps themselves are :func:`aot_cli.inspect.sweep.run_sweep`.

Leading: among the methods swept at the same ``--ratio`` (so at the same exact token budget) that
met it on every video, the highest mean coverage and salient coverage and the lowest mean OT error
(docs/method.md §10.2). The released code's rules (``--reference``) keep a data-dependent count,
so they are summarised but never compared.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .sweep import SweepPoint, SweepReport

#: The fidelity figures, and whether higher is better.
FIGURES: Tuple[Tuple[str, str, bool], ...] = (("coverage", "coverage", True),
                                               ("salient_coverage", "salient", True),
                                               ("ot_error", "OT error", False))
MARK = "*"


@dataclass
class SummaryRow:
    """One method and setting over every video: ``videos`` that met it, ``unmet`` that did not,
    the means of the achieved ratio, of the tokens kept and of each figure (None when a video
    lacks it), and ``leads``: the figures this row is best at among the methods at its ratio."""

    method: str
    rule: str
    setting: str
    requested: Optional[float]
    videos: int = 0
    unmet: int = 0
    achieved_ratio: Optional[float] = None
    achieved: Optional[float] = None
    coverage: Optional[float] = None
    salient_coverage: Optional[float] = None
    ot_error: Optional[float] = None
    leads: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DatasetSweep:
    """Sweeps of several videos: one :class:`SweepReport` per video that could be read, the
    ``failed`` ones (video, one-line error), the :func:`summarize` rows, and whether the figures
    include the OT error."""

    reports: List[SweepReport]
    failed: List[Tuple[str, str]] = field(default_factory=list)
    summary: List[SummaryRow] = field(default_factory=list)
    ot_error: bool = True

    def to_dict(self) -> dict:
        return {"videos": [r.to_dict() for r in self.reports], "summary": [row.to_dict() for row in self.summary],
                "failed": [{"video": v, "error": e} for v, e in self.failed], "ot_error": self.ot_error,
                "leading": "among the methods at the same --ratio that met it on every video: highest coverage and "
                           "salient coverage, lowest OT error"}


def _setting(point: SweepPoint) -> str:
    if point.rule == "ratio":
        return point.label
    return f"reference V={point.reference_anchors or point.num_anchors}, keep {point.keep_ratio:g}"


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def summarize(reports: Sequence[SweepReport]) -> List[SummaryRow]:
    """The dataset summary of ``reports`` (see :class:`SummaryRow`), rows in the order the
    methods and settings were swept; leaders marked (module docstring)."""
    rows: Dict[Tuple[str, str, str], SummaryRow] = {}
    points: Dict[Tuple[str, str, str], List[SweepPoint]] = {}
    for report in reports:
        for p in report.points:
            key = (p.method, p.rule, _setting(p))
            row = rows.setdefault(key, SummaryRow(p.method, p.rule, key[2], p.requested))
            if p.error is not None:
                row.unmet += 1
                continue
            row.videos += 1
            points.setdefault(key, []).append(p)
    for key, row in rows.items():
        met = points.get(key, [])
        row.achieved_ratio = _mean([p.achieved_ratio for p in met])
        row.achieved = _mean([float(p.achieved) for p in met if p.achieved is not None] or [None])
        for attr, _, _ in FIGURES:
            setattr(row, attr, _mean([getattr(p, attr) for p in met]))
    by_ratio: Dict[float, List[SummaryRow]] = {}
    for row in rows.values():
        if row.rule == "ratio" and row.unmet == 0 and row.videos:
            by_ratio.setdefault(row.requested, []).append(row)
    for group in by_ratio.values():
        if len(group) < 2:
            continue
        for attr, _, higher in FIGURES:
            scored = [r for r in group if getattr(r, attr) is not None]
            if len(scored) < 2:
                continue
            best = (max if higher else min)(getattr(r, attr) for r in scored)
            for r in scored:
                if getattr(r, attr) == best:
                    r.leads.append(attr)
    return list(rows.values())


def _num(value, fmt: str = "{}") -> str:
    return fmt.format(value) if value is not None else "-"


def _figure(value: Optional[float], leads: bool) -> str:
    return "-" if value is None else f"{value:.4f}{MARK if leads else ''}"


def _console(console):
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal and console.width < 132:
            console = Console(width=132)  # piped output: room for every column
    return console


def _figure_columns(fidelity: bool, ot_error: bool) -> List[Tuple[str, str, bool]]:
    if not fidelity:
        return []
    return [f for f in FIGURES if f[0] != "ot_error" or ot_error]


def print_sweep(report: SweepReport, console=None, leads: Optional[Dict[Tuple[str, str], List[str]]] = None) -> None:
    """One video's sweep as a rich table, one row per point: method, setting, V asked, anchors
    chosen per frame, planned and achieved token counts, achieved ratio and, when computed,
    coverage, salient coverage and OT error (``leads``: (method, setting) → figures to mark);
    settings that cannot be met are listed below it."""
    from rich.table import Table

    console = _console(console)
    leads = leads if leads is not None else {(r.method, r.setting): r.leads for r in summarize([report])}
    seed = f"; random seed {report.seed}" if "random" in report.methods else ""
    table = Table(title=f"{Path(report.video).name}: {report.frames} frames x {report.tokens_per_frame} tokens = "
                        f"{report.uncompressed} uncompressed{seed}")
    figures = _figure_columns(report.fidelity, report.ot_error)
    for col in ["method", "setting", "V", "anchors", "planned", "achieved", "ratio"] + [f[1] for f in figures]:
        table.add_column(col, justify="left" if col in ("method", "setting") else "right")
    for p in report.points:
        if p.error is not None:
            continue
        marked = leads.get((p.method, _setting(p)), [])
        row = [p.method, p.label if p.rule == "ratio" else f"reference {p.label}", _num(p.num_anchors),
               _num(p.anchors_per_frame), _num(p.planned), str(p.achieved), f"{p.achieved_ratio:.4f}"]
        row += [_figure(getattr(p, attr), attr in marked) for attr, _, _ in figures]
        table.add_row(*row)
    console.print(table)
    for p in report.points:
        if p.error is not None:
            console.print(f"{p.method} {p.label}: not met: {p.error}", highlight=False)
    if any(leads.values()) and figures:
        console.print(_mark_note(figures), highlight=False)


def _mark_note(figures: Sequence[Tuple[str, str, bool]]) -> str:
    best = [f"{'highest' if higher else 'lowest'} {name}" for _, name, higher in figures]
    return f"{MARK} leads its column among the methods at the same ratio ({', '.join(best)})"


def print_dataset(dataset: DatasetSweep, console=None) -> None:
    """Several videos' sweeps: one table of every video's rows, then the summary (means per method
    and setting, leaders marked), then the settings some videos could not meet and the videos that
    failed. One video: its table alone (leaders marked)."""
    from rich.table import Table

    from .render import printable

    console = _console(console)
    if len(dataset.reports) == 1 and not dataset.failed:
        print_sweep(dataset.reports[0], console)
        return
    first = dataset.reports[0] if dataset.reports else None
    figures = _figure_columns(bool(first and first.fidelity), dataset.ot_error)
    if dataset.reports:
        table = Table(title=f"{len(dataset.reports)} videos, per video")
        for col in ["video", "method", "setting", "achieved", "ratio"] + [f[1] for f in figures]:
            table.add_column(col, justify="left" if col in ("video", "method", "setting") else "right",
                             overflow="fold" if col == "video" else "ellipsis")
        for report in dataset.reports:
            for p in report.points:
                if p.error is None:
                    table.add_row(printable(Path(report.video).name), p.method, _setting(p), str(p.achieved),
                                  f"{p.achieved_ratio:.4f}", *[_figure(getattr(p, a), False) for a, _, _ in figures])
        console.print(table)
        summary = Table(title=f"mean over {len(dataset.reports)} videos")
        for col in ["method", "setting", "videos", "tokens", "ratio"] + [f[1] for f in figures]:
            summary.add_column(col, justify="left" if col in ("method", "setting") else "right")
        for row in dataset.summary:
            summary.add_row(row.method, row.setting, f"{row.videos}" + (f" ({row.unmet} not met)" if row.unmet else ""),
                            _num(row.achieved, "{:.1f}"), _num(row.achieved_ratio, "{:.4f}"),
                            *[_figure(getattr(row, a), a in row.leads) for a, _, _ in figures])
        console.print(summary)
        if any(row.leads for row in dataset.summary) and figures:
            console.print(_mark_note(figures), highlight=False)
        for report in dataset.reports:
            for p in report.points:
                if p.error is not None:
                    console.print(printable(f"{Path(report.video).name}: {p.method} {p.label}: not met: {p.error}"),
                                  highlight=False)
    for video, error in dataset.failed:
        console.print(printable(f"failed: {video}: {error}"), highlight=False)


def mean_points(dataset: DatasetSweep) -> List[SweepPoint]:
    """The summary as sweep points (the means), for :func:`aot_cli.inspect.plots.plot_ratio_sweep`."""
    out = []
    for row in dataset.summary:
        if not row.videos:
            continue
        point = SweepPoint(row.rule, row.requested, row.achieved_ratio, None,
                           int(round(row.achieved)) if row.achieved is not None else None, method=row.method,
                           coverage=row.coverage, salient_coverage=row.salient_coverage, ot_error=row.ot_error)
        if row.rule == "reference":
            label = row.setting[len("reference V="):]
            anchors, _, keep = label.partition(", keep ")
            point.reference_anchors = point.num_anchors = int(anchors)
            point.keep_ratio = float(keep)
        out.append(point)
    return out
