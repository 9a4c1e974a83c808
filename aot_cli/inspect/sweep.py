"""Ratio sweeps: how many tokens the method keeps for several ``--ratio`` values on one video.

A cache holds compressed tokens only, so a sweep needs the tower output again: :func:`run_sweep`
decodes the video and runs the tower once, then :func:`sweep_ratios` compresses that output at
every requested ratio (exact-budget rule) and :func:`reference_points` with the released code's
rules (``num_anchors`` V + ``keep_ratio``, data-dependent count) for comparison.
:func:`aot_cli.inspect.pictures.plot_ratio_sweep` draws the result.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from ..core import AOTConfig, BudgetError, compress

#: Cells per frame of the grid the released code's anchor counts were chosen for (SigLIP-so400m
#: at 384 px: 27 x 27).
REFERENCE_CELLS = 27 * 27
#: The released code's (V, keep_ratio) settings for LLaVA-OneVision, 32 frames (docs/method.md §5).
REFERENCE_RULES: Tuple[Tuple[int, float], ...] = ((126, 0.3), (108, 0.1))


@dataclass
class SweepPoint:
    """One compression of the sweep.

    ``rule``: "ratio" (exact budget; ``requested`` is the ratio asked for, ``planned`` the planner's
    target count) or "reference" (``num_anchors`` V per frame on the tower grid and ``keep_ratio``;
    ``requested`` and ``planned`` are None). ``achieved``: visual tokens produced (newlines are not
    counted); ``achieved_ratio = achieved / (frames * tokens_per_frame)``. ``num_anchors``: the V
    asked of anchor selection (the planner's for "ratio"); ``reference_anchors``: V as given on the
    27x27 reference grid before scaling to this tower's grid; ``anchors_per_frame``: anchors
    actually chosen per frame (the reference rule drops the local remainder, so it can be
    fewer than V). ``error``: one line
    when this setting cannot be met (then the counts are None). ``seconds``: time of the method.
    """

    rule: str
    requested: Optional[float]
    achieved_ratio: Optional[float]
    planned: Optional[int]
    achieved: Optional[int]
    num_anchors: Optional[int] = None
    keep_ratio: Optional[float] = None
    reference_anchors: Optional[int] = None
    anchors_per_frame: Optional[int] = None
    error: Optional[str] = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        """Short human name: ``ratio 0.1`` or ``V=126, keep 0.3``."""
        if self.rule == "ratio":
            return f"ratio {self.requested:g}"
        v = self.reference_anchors if self.reference_anchors is not None else self.num_anchors
        scaled = "" if self.reference_anchors in (None, self.num_anchors) else f" (={self.num_anchors} here)"
        return f"V={v}{scaled}, keep {self.keep_ratio:g}"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["label"] = self.label
        return data


@dataclass
class SweepReport:
    """A sweep of one video: geometry, the points, and where the time went (seconds)."""

    video: str
    frames: int
    tower_grid: Tuple[int, int]
    grid: Tuple[int, int]
    tokens_per_frame: int
    model: Optional[str]
    points: List[SweepPoint]
    timings_s: dict = field(default_factory=dict)

    @property
    def uncompressed(self) -> int:
        """Tokens the model would get without compression (``frames * tokens_per_frame``)."""
        return self.frames * self.tokens_per_frame

    def to_dict(self) -> dict:
        return {"video": self.video, "frames": self.frames, "tower_grid": list(self.tower_grid),
                "grid": list(self.grid), "tokens_per_frame": self.tokens_per_frame,
                "uncompressed": self.uncompressed, "model": self.model,
                "points": [p.to_dict() for p in self.points], "timings_s": dict(self.timings_s)}


def parse_ratios(text: str) -> List[float]:
    """``"0.05,0.1,0.25"`` -> ``[0.05, 0.1, 0.25]``; ValueError (one line) for anything else."""
    try:
        ratios = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"ratios must be numbers separated by commas, e.g. 0.05,0.1,0.25; got {text!r}") from None
    bad = [r for r in ratios if not 0.0 < r <= 1.0]
    if not ratios or bad:
        raise ValueError(f"ratios must be in (0, 1], got {text!r}")
    return ratios


def parse_references(text: str) -> List[Tuple[int, float]]:
    """``"126:0.3,108:0.1"`` -> ``[(126, 0.3), (108, 0.1)]``; ``""``/``"none"`` -> ``[]``."""
    if str(text).strip().lower() in ("", "none"):
        return []
    rules = []
    for part in str(text).split(","):
        v, sep, k = part.partition(":")
        try:
            anchors, keep = int(v), float(k)
        except ValueError:
            raise ValueError(f"reference rules look like 126:0.3,108:0.1 (anchors:keep_ratio); got {text!r}") from None
        if not sep or anchors < 1 or not 0.0 <= keep <= 1.0:
            raise ValueError(f"reference rules look like 126:0.3,108:0.1 (anchors:keep_ratio); got {text!r}")
        rules.append((anchors, keep))
    return rules


def scaled_anchors(anchors: int, cells: int, reference_cells: int = REFERENCE_CELLS) -> int:
    """V chosen for a ``reference_cells`` grid, scaled to a grid of ``cells`` (same share of the
    frame, at least 1): ``max(1, round(anchors * cells / reference_cells))``."""
    return max(1, int(math.floor(anchors * cells / reference_cells + 0.5)))


def _compress_point(tokens: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor, grid: Sequence[int],
                    config: AOTConfig, point: SweepPoint) -> SweepPoint:
    """Run ``config`` and fill ``point``'s counts (or its error)."""
    start = time.perf_counter()
    try:
        res = compress(tokens, shallow, deep, grid, config)
    except (BudgetError, ValueError) as exc:
        point.error = " ".join(str(exc).split())
        return point
    point.seconds = time.perf_counter() - start
    cells = int(res.grid[0] * res.grid[1])
    point.achieved = len(res)
    point.achieved_ratio = len(res) / (tokens.shape[0] * cells)
    point.planned = res.plan.target if res.plan is not None else None
    if res.plan is not None:
        point.num_anchors = int(res.plan.num_anchors)
    point.anchors_per_frame = int(res.anchors_per_frame.max()) if len(res.anchors_per_frame) else None
    return point


def sweep_ratios(tokens: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor, grid: Sequence[int],
                 config: AOTConfig, ratios: Sequence[float]) -> List[SweepPoint]:
    """Compress one video's tower output at each ratio (exact-budget rule).

    ``tokens [F, N, D]``, ``shallow``/``deep [F, N]``, ``grid (H, W)`` as for
    :func:`aot_cli.core.compress`; ``config`` gives every other method setting (its ``ratio``,
    ``num_anchors`` and ``keep_ratio`` are replaced). Returns one :class:`SweepPoint` per ratio,
    in order; a ratio the planner cannot meet gets ``error`` instead of counts.
    """
    points = []
    for r in ratios:
        cfg = dataclasses.replace(config, method="aot", ratio=float(r), num_anchors=None, keep_ratio=None)
        points.append(_compress_point(tokens, shallow, deep, grid, cfg,
                                      SweepPoint("ratio", float(r), None, None, None)))
    return points


def reference_points(tokens: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor, grid: Sequence[int],
                     config: AOTConfig, rules: Sequence[Tuple[int, float]] = REFERENCE_RULES,
                     reference_cells: int = REFERENCE_CELLS) -> List[SweepPoint]:
    """Compress with the released code's rules: ``(V, keep_ratio)`` pairs whose V is given for a
    ``reference_cells`` tower grid (27x27) and scaled to this grid by :func:`scaled_anchors`
    (unchanged on a 27x27 tower). The count is data-dependent; ``achieved_ratio`` says what it was."""
    cells = int(grid[0]) * int(grid[1])
    points = []
    for anchors, keep in rules:
        v = scaled_anchors(int(anchors), cells, reference_cells)
        cfg = dataclasses.replace(config, method="aot", ratio=None, num_anchors=v, keep_ratio=float(keep))
        point = SweepPoint("reference", None, None, None, None, num_anchors=v, keep_ratio=float(keep),
                           reference_anchors=int(anchors))
        points.append(_compress_point(tokens, shallow, deep, grid, cfg, point))
    return points


def run_sweep(video: str | Path, ratios: Sequence[float], cfg=None, *,
              references: Sequence[Tuple[int, float]] = REFERENCE_RULES, adapter=None) -> SweepReport:
    """Decode ``video`` and run the tower once (settings from ``cfg``, an
    :class:`aot_cli.pipeline.run.RunConfig`), then :func:`sweep_ratios` and
    :func:`reference_points` on that output. ``adapter``: an already loaded model (else
    ``load_model(cfg.model)``). Raises the decoder's / loader's one-line errors."""
    from ..models import load_model
    from ..pipeline.run import RunConfig, resolve_method
    from ..video import decode_video

    cfg = cfg or RunConfig()
    timings = {}
    t0 = time.perf_counter()
    adapter = adapter or load_model(cfg.model)
    t1 = time.perf_counter()
    decoded = decode_video(Path(video), cfg.decode, default_frames=adapter.profile.default_frames)
    t2 = time.perf_counter()
    out = adapter.encode(adapter.preprocess(decoded.frames), score_layers=cfg.model.score_layers or adapter.profile.score_layers)
    t3 = time.perf_counter()
    base = dataclasses.replace(cfg.method, method="aot", ratio=float(ratios[0]) if ratios else 0.1,
                               num_anchors=None, keep_ratio=None)
    method = resolve_method(dataclasses.replace(cfg, method=base), adapter.profile)
    grid = tuple(int(x) for x in out.grid)
    points = sweep_ratios(out.tokens, out.shallow, out.deep, grid, method, ratios)
    points += reference_points(out.tokens, out.shallow, out.deep, grid, method, references)
    t4 = time.perf_counter()
    timings.update(load=t1 - t0, decode=t2 - t1, tower=t3 - t2, method=t4 - t3)
    out_grid = _output_grid(grid, method)
    return SweepReport(video=str(video), frames=int(out.tokens.shape[0]), tower_grid=grid, grid=out_grid,
                       tokens_per_frame=out_grid[0] * out_grid[1], model=adapter.describe().get("model"),
                       points=points, timings_s={k: round(v, 4) for k, v in timings.items()})


def _output_grid(grid: Tuple[int, int], method: AOTConfig) -> Tuple[int, int]:
    """The grid the model's tokens come on after the method's pooling."""
    from ..core import pooled_grid

    if method.pooling is None:
        return grid
    g = pooled_grid(grid, method.stride, method.pooling)
    return int(g[0]), int(g[1])


def sweep_title(report: SweepReport) -> str:
    """A plot title naming the video, frames, grids and model of ``report``."""
    name = Path(report.video).name
    return (f"{name}: {report.frames} frames, tower {report.tower_grid[0]}x{report.tower_grid[1]} -> "
            f"{report.grid[0]}x{report.grid[1]} = {report.tokens_per_frame} tokens per frame\n"
            f"model {report.model}")


def print_sweep(report: SweepReport, console=None) -> None:
    """The sweep as a rich table, one row per point: setting, V asked, anchors chosen per frame, planned and
    achieved token counts, achieved ratio; settings that cannot be met are listed below it."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{Path(report.video).name}: {report.frames} frames x {report.tokens_per_frame} tokens = "
                        f"{report.uncompressed} uncompressed")
    for col in ("setting", "V", "anchors", "planned", "achieved", "ratio"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for p in report.points:
        if p.error is not None:
            continue
        table.add_row(p.label if p.rule == "ratio" else f"reference {p.label}",
                      str(p.num_anchors) if p.num_anchors is not None else "-",
                      str(p.anchors_per_frame) if p.anchors_per_frame is not None else "-",
                      str(p.planned) if p.planned is not None else "-", str(p.achieved), f"{p.achieved_ratio:.4f}")
    console.print(table)
    for p in report.points:
        if p.error is not None:
            console.print(f"{p.label}: not met: {p.error}", highlight=False)
