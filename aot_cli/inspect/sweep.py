"""Ratio sweeps: how many tokens each method keeps for several ``--ratio`` values on one video, and
how faithfully they stand for the uncompressed tokens.

A cache holds compressed tokens only, so a sweep needs the tower output again: :func:`run_sweep`
decodes the video and runs the tower once, then :func:`sweep_ratios` compresses that output with
every requested method at every requested ratio (exact budgets) and :func:`reference_points` with
the released code's rules (``num_anchors`` V + ``keep_ratio``, data-dependent count) for
comparison. With fidelity on, every point also gets coverage, salient coverage and OT error
against the model's own uncompressed tokens (docs/method.md §10.2, :mod:`aot_cli.core.fidelity`).
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
from ..core.config import _DEFAULTS, _REFERENCE_ONLY
from ..core.fidelity import fidelity as fidelity_of, full_scores, full_tokens

#: Method names a sweep compares: ``aot`` (the configured method), ``quality`` (the quality preset,
#: docs/method.md §10.3) and the baselines of §10.1.
SWEEP_METHODS = ("aot", "quality", "random", "pool", "attention")

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
    ``method``: ``aot``, ``quality``, ``random``, ``pool`` or ``attention`` (see
    :data:`SWEEP_METHODS`). ``coverage``, ``salient_coverage``, ``ot_error``: fidelity against the
    uncompressed tokens (docs/method.md §10.2), None when not computed; ``fidelity_seconds``: their time.
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
    method: str = "aot"
    coverage: Optional[float] = None
    salient_coverage: Optional[float] = None
    ot_error: Optional[float] = None
    fidelity_seconds: Optional[float] = None

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
    """A sweep of one video: geometry, the points, and where the time went (seconds). ``methods``:
    the methods compared; ``seed``: the seed of ``random``; ``fidelity``: whether the points carry
    fidelity figures; ``ot_error``: whether those include the OT error (POT installed);
    ``config``: the method configuration the sweep started from."""

    video: str
    frames: int
    tower_grid: Tuple[int, int]
    grid: Tuple[int, int]
    tokens_per_frame: int
    model: Optional[str]
    points: List[SweepPoint]
    timings_s: dict = field(default_factory=dict)
    methods: Tuple[str, ...] = ("aot",)
    seed: int = 0
    fidelity: bool = False
    config: Optional[dict] = None
    ot_error: bool = False

    @property
    def uncompressed(self) -> int:
        """Tokens the model would get without compression (``frames * tokens_per_frame``)."""
        return self.frames * self.tokens_per_frame

    def to_dict(self) -> dict:
        return {"video": self.video, "frames": self.frames, "tower_grid": list(self.tower_grid),
                "grid": list(self.grid), "tokens_per_frame": self.tokens_per_frame,
                "uncompressed": self.uncompressed, "model": self.model,
                "methods": list(self.methods), "seed": self.seed, "fidelity": self.fidelity,
                "ot_error": self.ot_error, "config": self.config,
                "points": [p.to_dict() for p in self.points], "timings_s": dict(self.timings_s)}


def parse_ratios(text: str) -> List[float]:
    """``"0.05,0.1,0.25"`` -> ``[0.05, 0.1, 0.25]``; ValueError (one line) for anything else."""
    try:
        ratios = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--ratios must be numbers separated by commas, e.g. 0.05,0.1,0.25; got {text!r}") from None
    bad = [r for r in ratios if not 0.0 < r <= 1.0]
    if not ratios or bad:
        raise ValueError(f"--ratios must be in (0, 1], got {text!r}")
    return ratios


def parse_methods(text: str) -> List[str]:
    """``"aot,random"`` -> ``["aot", "random"]`` (order kept, duplicates dropped); ValueError (one
    line) for a name not in :data:`SWEEP_METHODS`."""
    names: List[str] = []
    for part in str(text).split(","):
        name = part.strip().lower()
        if name and name not in names:
            names.append(name)
    bad = [n for n in names if n not in SWEEP_METHODS]
    if not names or bad:
        raise ValueError(f"--methods takes names from {','.join(SWEEP_METHODS)} separated by commas; got {text!r}")
    return names


def method_config(config: AOTConfig, method: str, ratio: float) -> AOTConfig:
    """The configuration of one sweep point: ``config`` at ``ratio`` (exact budget) for ``method``
    (:data:`SWEEP_METHODS`). ``aot`` keeps every setting of ``config``; ``quality`` and the
    baselines keep its pooling, clips, Sinkhorn settings and seed and drop the options only the
    reference chain uses (docs/method.md §2-§5)."""
    if method not in SWEEP_METHODS:
        raise ValueError(f"--methods: unknown method {method!r} (choose from {', '.join(SWEEP_METHODS)})")
    cfg = dataclasses.replace(config, ratio=float(ratio), num_anchors=None, keep_ratio=None)
    if method == "aot":
        return dataclasses.replace(cfg, method="aot")
    reset = {name: _DEFAULTS[name] for name, _ in _REFERENCE_ONLY}
    if method == "quality":
        return dataclasses.replace(cfg, method="aot", preset="quality", **reset)
    return dataclasses.replace(cfg, method=method, preset="reference", **reset)


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
            raise ValueError(f"--reference takes rules like 126:0.3,108:0.1 (anchors:keep_ratio); got {text!r}") from None
        if not sep or anchors < 1 or not 0.0 <= keep <= 1.0:
            raise ValueError(f"--reference takes rules like 126:0.3,108:0.1 (anchors:keep_ratio); got {text!r}")
        rules.append((anchors, keep))
    return rules


def scaled_anchors(anchors: int, cells: int, reference_cells: int = REFERENCE_CELLS) -> int:
    """V chosen for a ``reference_cells`` grid, scaled to a grid of ``cells`` (same share of the
    frame, at least 1): ``max(1, round(anchors * cells / reference_cells))``."""
    return max(1, int(math.floor(anchors * cells / reference_cells + 0.5)))


class _Fidelity:
    """The uncompressed tokens and salience of one video, for fidelity figures of many points
    (``ot``: the OT error too, which needs POT)."""

    def __init__(self, tokens: torch.Tensor, deep: Optional[torch.Tensor], grid: Sequence[int], config: AOTConfig,
                 ot: bool = True):
        self.full = full_tokens(tokens, grid, config.pooling, config.stride)
        self.salience = full_scores(deep, grid, config.pooling, config.stride) if deep is not None else None
        self.ot = ot

    def fill(self, kept: torch.Tensor, point: SweepPoint) -> None:
        start = time.perf_counter()
        fig = fidelity_of(self.full, kept, self.salience, ot=self.ot)
        point.coverage, point.salient_coverage, point.ot_error = fig.coverage, fig.salient_coverage, fig.ot_error
        point.fidelity_seconds = round(time.perf_counter() - start, 4)


def _compress_point(tokens: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor, grid: Sequence[int],
                    config: AOTConfig, point: SweepPoint, fid: Optional[_Fidelity] = None) -> SweepPoint:
    """Run ``config`` and fill ``point``'s counts (or its error) and, with ``fid``, its fidelity."""
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
    if res.plan is not None and config.method == "aot" and config.preset == "reference":
        point.num_anchors = int(res.plan.num_anchors)
    if config.method == "aot" and config.preset == "reference":
        point.anchors_per_frame = int(res.anchors_per_frame.max()) if len(res.anchors_per_frame) else None
    if fid is not None and len(res):
        fid.fill(res.tokens, point)
    return point


def sweep_ratios(tokens: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor, grid: Sequence[int],
                 config: AOTConfig, ratios: Sequence[float], methods: Sequence[str] = ("aot",), *,
                 fidelity: bool = False, ot: bool = True) -> List[SweepPoint]:
    """Compress one video's tower output with each method at each ratio (exact budgets).

    ``tokens [F, N, D]``, ``shallow``/``deep [F, N]``, ``grid (H, W)`` as for
    :func:`aot_cli.core.compress`; ``config`` gives every other setting (see :func:`method_config`).
    Returns one :class:`SweepPoint` per method and ratio, method by method; a setting that cannot be
    met gets ``error`` instead of counts. ``fidelity``: also compute coverage, salient coverage and,
    with ``ot``, the OT error (needs POT).
    """
    fid = _Fidelity(tokens, deep, grid, config, ot) if fidelity else None
    points = []
    for method in methods:
        for r in ratios:
            cfg = method_config(config, method, r)
            points.append(_compress_point(tokens, shallow, deep, grid, cfg,
                                          SweepPoint("ratio", float(r), None, None, None, method=method), fid))
    return points


def reference_points(tokens: torch.Tensor, shallow: torch.Tensor, deep: torch.Tensor, grid: Sequence[int],
                     config: AOTConfig, rules: Sequence[Tuple[int, float]] = REFERENCE_RULES,
                     reference_cells: int = REFERENCE_CELLS, *, fidelity: bool = False,
                     ot: bool = True) -> List[SweepPoint]:
    """Compress with the released code's rules: ``(V, keep_ratio)`` pairs whose V is given for a
    ``reference_cells`` tower grid (27x27) and scaled to this grid by :func:`scaled_anchors`
    (unchanged on a 27x27 tower). The count is data-dependent; ``achieved_ratio`` says what it was.
    ``fidelity`` and ``ot`` as for :func:`sweep_ratios`."""
    cells = int(grid[0]) * int(grid[1])
    fid = _Fidelity(tokens, deep, grid, config, ot) if fidelity else None
    points = []
    for anchors, keep in rules:
        v = scaled_anchors(int(anchors), cells, reference_cells)
        cfg = dataclasses.replace(config, method="aot", preset="reference", ratio=None, num_anchors=v,
                                  keep_ratio=float(keep))
        point = SweepPoint("reference", None, None, None, None, num_anchors=v, keep_ratio=float(keep),
                           reference_anchors=int(anchors))
        points.append(_compress_point(tokens, shallow, deep, grid, cfg, point, fid))
    return points


def run_sweep(video: str | Path, ratios: Sequence[float], cfg=None, *,
              references: Sequence[Tuple[int, float]] = REFERENCE_RULES, adapter=None,
              methods: Sequence[str] = ("aot",), fidelity: bool = True, ot: bool = True) -> SweepReport:
    """Decode ``video`` and run the tower once (settings from ``cfg``, an
    :class:`aot_cli.pipeline.run.RunConfig`), then :func:`sweep_ratios` for every method and
    :func:`reference_points` on that output. ``adapter``: an already loaded model (else
    ``load_model(cfg.model)``). ``fidelity``: coverage, salient coverage and (with ``ot``) the OT
    error for every point; the OT error needs POT (checked before anything is loaded). Raises the
    decoder's / loader's one-line errors, and :class:`aot_cli.core.fidelity.FidelityError` when
    ``ot`` is asked for without POT."""
    from ..core.fidelity import require_pot
    from ..models import load_model
    from ..pipeline.run import RunConfig, resolve_method
    from ..pipeline.workers import decode_target
    from ..video import decode_video

    cfg = cfg or RunConfig()
    methods = tuple(methods)
    for m in methods:
        method_config(cfg.method, m, 0.1)  # unknown names fail before any work
    if fidelity and ot:
        require_pot()
    timings = {}
    t0 = time.perf_counter()
    adapter = adapter or load_model(cfg.model)
    t1 = time.perf_counter()
    decoded = decode_video(Path(video), cfg.decode, default_frames=adapter.profile.default_frames,
                           target_size=decode_target(adapter, cfg.decode))
    t2 = time.perf_counter()
    out = adapter.encode(adapter.preprocess(decoded.frames), score_layers=cfg.model.score_layers or adapter.profile.score_layers)
    t3 = time.perf_counter()
    base = dataclasses.replace(cfg.method, method="aot", ratio=float(ratios[0]) if ratios else 0.1,
                               num_anchors=None, keep_ratio=None)
    method = resolve_method(dataclasses.replace(cfg, method=base), adapter.profile)
    grid = tuple(int(x) for x in out.grid)
    points = sweep_ratios(out.tokens, out.shallow, out.deep, grid, method, ratios, methods, fidelity=fidelity, ot=ot)
    points += reference_points(out.tokens, out.shallow, out.deep, grid, method, references, fidelity=fidelity, ot=ot)
    t4 = time.perf_counter()
    timings.update(load=t1 - t0, decode=t2 - t1, tower=t3 - t2, method=t4 - t3)
    if fidelity:
        timings["fidelity"] = sum(p.fidelity_seconds or 0.0 for p in points)
    out_grid = _output_grid(grid, method)
    return SweepReport(video=str(video), frames=int(out.tokens.shape[0]), tower_grid=grid, grid=out_grid,
                       tokens_per_frame=out_grid[0] * out_grid[1], model=adapter.describe().get("model"),
                       points=points, timings_s={k: round(v, 4) for k, v in timings.items()},
                       methods=methods, seed=int(method.seed), fidelity=bool(fidelity), config=method.to_dict(),
                       ot_error=bool(fidelity and ot))


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
    """One video's sweep as a table (see :func:`aot_cli.inspect.sweep_report.print_sweep`)."""
    from .sweep_report import print_sweep as print_one

    print_one(report, console)
