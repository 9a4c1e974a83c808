"""Helpers of ``benchmarks/gpu.sh``: the test clip it decodes, and its results as a markdown section
in the form of ``benchmarks/RESULTS.md``.

    python benchmarks/gpu_report.py clip OUT.mp4 --size 1920x1080 --seconds 30
    python benchmarks/gpu_report.py render OUTDIR [--tiny]

``render`` reads what gpu.sh left in OUTDIR (``nvidia-smi.txt``, ``commands.tsv``, ``clip.json``,
``bench_*.json``, ``baseline.json``, ``core.json``) and prints the section: machine, the exact
commands with their wall times, the targets, and one table per measurement. A step that failed or
was skipped is named with its reason instead of its table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

GIB = 2 ** 30
MIB = 2 ** 20

#: Sections of the rendered markdown, in order (a test checks that each one is there).
SECTIONS = (
    "Machine",
    "Commands",
    "Targets",
    "`aot bench`: end to end against the tower",
    "Decode against the tower",
    "Against the papers' way",
    "Method core against the tower",
)


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int = 25) -> None:
    """An H.264 MP4 of real footage (samples/bikes.mp4 scaled to ``width`` x ``height``, played
    forwards and backwards), as benchmarks/decode.py writes its long clips."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from decode import bikes_frames, encode

    path.parent.mkdir(parents=True, exist_ok=True)
    encode(path, bikes_frames(width, height), max(2, int(round(seconds * fps))), width, height, fps)


# ------------------------------------------------------------------------------------- reading

def _load(folder: Path, name: str) -> Optional[dict]:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


#: gpu.sh's steps in the order it starts them (with --tiny, several run at once).
STEPS = ("bench_dinov2", "core", "models", "clip", "bench_samples", "bench_clip", "baseline")


def _steps(folder: Path) -> List[Dict[str, str]]:
    """The steps gpu.sh ran: name, exit status, seconds, command (``commands.tsv``), in the order
    of :data:`STEPS`."""
    path = folder / "commands.tsv"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4:
            rows.append({"name": parts[0], "rc": parts[1], "seconds": parts[2], "command": parts[3]})
    order = {name: i for i, name in enumerate(STEPS)}
    return sorted(rows, key=lambda row: order.get(row["name"], len(STEPS)))


def _f(x: Optional[float], digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


def _missing(steps: List[Dict[str, str]], name: str) -> str:
    """Why a step's results are absent: its exit status, or that it did not run."""
    for step in steps:
        if step["name"] == name:
            if step["rc"] == "skipped":
                return f"*Not measured: {step['command']}.*"
            return f"*Step `{name}` failed (exit {step['rc']}); see `{name}.log` in the output folder.*"
    return f"*Step `{name}` did not run.*"


# ------------------------------------------------------------------------------------- sections

def machine_section(folder: Path, bench: Optional[dict]) -> List[str]:
    lines = ["### Machine", ""]
    m = (bench or {}).get("machine")
    if m is None:  # the main benchmark failed: describe the machine from here
        from aot_cli.bench import machine_info

        m = machine_info()
    if m:
        gpus = ", ".join(f"{g['name']} ({_bytes(g['memory_bytes'])}, capability {g['capability']})"
                         for g in m.get("gpus", [])) or "no GPU"
        lines.append(f"{m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} cores (torch "
                     f"{m['torch_threads']} threads), {_bytes(m['memory_bytes'])} RAM; {gpus}. {m['platform']}, "
                     f"Python {m['python']}, torch {m['torch']} (CUDA {m.get('cuda') or '–'}), transformers "
                     f"{m['transformers']}, aot {m['aot']}.")
    smi = folder / "nvidia-smi.txt"
    if smi.is_file() and smi.read_text().strip():
        lines += ["", "```", smi.read_text().strip(), "```"]
    return lines


def commands_section(folder: Path, steps: List[Dict[str, str]], tiny: bool) -> List[str]:
    order = ("in this order; with `--tiny` the steps that do not need each other's output run at once"
             if tiny else "one after another, in this order")
    lines = ["### Commands", "", f"Run by `benchmarks/gpu.sh{' --tiny' if tiny else ''} OUTDIR` from the repository "
             f"root, {order} (wall seconds of each step):", "", "```bash"]
    for step in steps:
        if step["rc"] == "skipped":
            lines.append(f"# {step['name']}: skipped ({step['command']})")
            continue
        status = "" if step["rc"] == "0" else f", exit {step['rc']}"
        lines.append(f"{step['command']}  # {step['name']}: {step['seconds']} s{status}")
    lines.append("```")
    wall = folder / "wall.txt"
    if wall.is_file() and wall.read_text().strip():
        lines += ["", f"Whole script: {wall.read_text().strip()} s."]
    return lines


def _ratio_row(name: str, value: Optional[float], op: str, limit: float, where: str) -> str:
    if value is None:
        verdict = "–"
    else:
        verdict = "met" if (value >= limit if op == ">=" else value <= limit) else "**not met**"
    return f"| {name} | {_f(value, 3)} | {op} {limit:g} | {verdict} | {where} |"


def targets_section(bench: Optional[dict], baseline: Optional[dict], core: Optional[dict]) -> List[str]:
    lines = ["### Targets", "", "| target | measured | limit | status | from |", "|---|---|---|---|---|"]
    if bench:
        r = bench["ratios"]
        lines.append(_ratio_row("end-to-end throughput / tower-only throughput", r["end_to_end_vs_tower"], ">=",
                                0.9, "`aot bench` (paired median " + _f(r.get("end_to_end_vs_tower_paired")) + ")"))
        lines.append(_ratio_row("scored pass / plain SDPA pass, time", r["scored_vs_plain_time"], "<=", 1.10,
                                "`aot bench` (paired median " + _f(r.get("scored_vs_plain_time_paired")) + ")"))
        lines.append(_ratio_row("scored pass / plain SDPA pass, peak memory", r["scored_vs_plain_memory"], "<=",
                                1.15, f"`aot bench` ({bench['memory_basis']})"))
    if baseline and baseline.get("comparison"):
        c = baseline["comparison"]
        lines.append(_ratio_row("papers' way / aot, end-to-end time", c["speedup_end_to_end"], ">=", 3,
                                "`baseline.py --compare`"))
        device = c.get("memory_ratio_peak_device")
        if device is not None:
            lines.append(_ratio_row("papers' way / aot, peak device memory", device, ">=", 5,
                                    "`baseline.py --compare`"))
        lines.append(_ratio_row("papers' way / aot, peak host memory (process tree)", c["memory_ratio_peak_rss"],
                                ">=", 5, "`baseline.py --compare` (host; the target is stated for the device)"))
    if bench and bench.get("throughput"):
        t = bench["throughput"]
        lines.append(f"| decode keeps ahead of the main process (decode / main-process frames/s) | "
                     f"{_f(t['decode_vs_main'], 2)} | >= 1 | {t['bound']} | `aot bench` |")
    if core:
        share = core.get("core_share_of_tower_ratio0.1")
        lines.append(f"| method core (`--ratio 0.1`) / tower time | {_f(share, 4)} | reported | – | `core.py` |")
    if bench:
        lines.append(f"| cache bytes / bytes with every token | {_f(bench['ratios']['cache_vs_all_tokens'], 4)} | "
                     f"reported | – | `aot bench` |")
    return lines


def bench_section(bench: Optional[dict], steps, step: str) -> List[str]:
    lines = ["### `aot bench`: end to end against the tower", ""]
    if not bench:
        return lines + [_missing(steps, step)]
    m, totals = bench["model"], bench["totals"]
    lines += [f"{totals['videos']} video(s), {totals['frames']} frames; `{m['model']}` ({m['family']}, {m['dtype']} "
              f"on {m['device']}, {m['batch_frames']} frames per pass); best of {bench['repeat']}.", "",
              "| stage (one at a time) | seconds | share |", "|---|---|---|"]
    stages = bench["stages_s"]
    total = sum(stages.values()) or 1.0
    for name, seconds in stages.items():
        lines.append(f"| {name} | {seconds:.4f} | {100 * seconds / total:.1f} % |")
    e2e, plain, scored = bench["end_to_end"], bench["tower_only"], bench["scored_tower"]
    device = m["device"].startswith("cuda")
    key = "device_working_bytes" if device else "host_working_bytes"
    lines += ["", "| | seconds | frames/s | videos/s | working memory |", "|---|---|---|---|---|",
              f"| end to end (`aot compress` pipeline) | {e2e['seconds']:.4f} | {_f(e2e['frames_per_s'], 1)} | "
              f"{_f(e2e['videos_per_s'], 3)} | peak host {_bytes(e2e['peak_host_bytes'])} (tree "
              f"{_bytes(e2e['peak_host_tree_bytes'])}), device {_bytes(e2e['peak_device_bytes'])} |",
              f"| tower only (plain SDPA pass) | {plain['seconds']:.4f} | {_f(plain['frames_per_s'], 1)} | "
              f"{_f(plain['videos_per_s'], 3)} | {_bytes(plain[key])} |",
              f"| scored pass | {scored['seconds']:.4f} | {_f(scored['frames_per_s'], 1)} | "
              f"{_f(scored['videos_per_s'], 3)} | {_bytes(scored[key])} |"]
    c = bench["cache"]
    lines += ["", f"Cache: {_bytes(c['bytes_per_video'])} per video ({c['tokens_per_video']:.0f} tokens × "
              f"{c['token_dim']} {c['token_dtype']}) vs {_bytes(c['all_tokens_bytes_per_video'])} with every token."]
    return lines


def decode_section(runs: List[tuple], steps) -> List[str]:
    lines = ["### Decode against the tower", "",
             "Decode stage alone with the run's decode workers (hash + decode, clips cycled so every worker has "
             "work) against the main process's stages in turn (preprocess, scored tower pass, method, write) and "
             "the tower alone, in frames/s:", "",
             "| input | model | decode workers | decode | tower (plain) | tower (scored) | main process | "
             "end to end | bound |", "|---|---|---|---|---|---|---|---|---|"]
    for label, step, bench in runs:
        if not bench or not bench.get("throughput"):
            lines.append(f"| {label} | – | – | – | – | – | – | – | {_missing(steps, step)} |")
            continue
        t = bench["throughput"]
        d = t["decode"]
        totals = bench["totals"]
        label = f"{label}, {totals['videos']} × {totals['frames'] // max(1, totals['videos'])} frames"
        lines.append(f"| {label} | `{bench['model']['model']}` | {d['workers']} | {_f(d['frames_per_s'], 1)} | "
                     f"{_f(t['tower']['frames_per_s'], 1)} | {_f(t['scored_tower']['frames_per_s'], 1)} | "
                     f"{_f(t['main_process']['frames_per_s'], 1)} | {_f(t['end_to_end']['frames_per_s'], 1)} | "
                     f"**{t['bound']}** (decode {_f(t['decode_vs_main'], 2)}× the main process) |")
    return lines


def baseline_section(baseline: Optional[dict], steps) -> List[str]:
    lines = ["### Against the papers' way", ""]
    if not baseline or not baseline.get("comparison"):
        return lines + [_missing(steps, "baseline")]
    b, c = baseline["baseline"], baseline["comparison"]
    lines += [f"`benchmarks/baseline.py` on {Path(b['video']).name}, {b['frames']} frames, {b['dtype']} on "
              f"{b['device']}: decord, the transformers image processor, the whole LLaVA-OneVision model with eager "
              f"attention and every layer's attention map, per-frame Python loops; against `aot bench` in its own "
              f"process.", "",
              "| | baseline | aot | ratio |", "|---|---|---|---|",
              f"| seconds | {c['baseline_seconds']:.4f} | {c['aot_seconds']:.4f} | "
              f"**{c['speedup_end_to_end']:.2f}×** |",
              f"| peak host memory (aot: process tree) | {_bytes(c['baseline_peak_host_bytes'])} | "
              f"{_bytes(c['aot_peak_host_tree_bytes'])} | {c['memory_ratio_peak_rss']:.2f}× |"]
    if c.get("memory_ratio_peak_device") is not None:
        aot_device = baseline.get("aot", {}).get("end_to_end", {}).get("peak_device_bytes")
        lines.append(f"| peak device memory | {_bytes(b.get('peak_device_bytes'))} | {_bytes(aot_device)} | "
                     f"**{c['memory_ratio_peak_device']:.2f}×** |")
    lines.append(f"| tokens | {c['tokens']['baseline']} | {c['tokens']['aot']} | |")
    return lines


def core_section(core: Optional[dict], steps) -> List[str]:
    lines = ["### Method core against the tower", ""]
    if not core:
        return lines + [_missing(steps, "core")]
    layers = core.get("tower_layers", 27)
    tower = core.get("tower_bf16_sdpa_s")
    lines += [f"`compress` on {core['frames']} frames × 729 tokens × D=1152 on {core['machine']['device']} against "
              f"one forward of a random-weight SigLIP-so400m-geometry tower ({layers} layers, bf16, SDPA) on the "
              f"same frames:", "", "| | seconds | share of the tower |", "|---|---|---|",
              f"| tower, {core['frames']} frames | {_f(tower, 4)} | |"]
    names = {"reference": "reference rules (V=126, keep 0.3)", "ratio0.1": "`--ratio 0.1`",
             "quality_ratio0.1": "`--preset quality --ratio 0.1`", "random_ratio0.1": "`--method random --ratio 0.1`",
             "pool_ratio0.1": "`--method pool --ratio 0.1`", "attention_ratio0.1": "`--method attention --ratio 0.1`"}
    for key, label in names.items():
        if f"core_{key}_s" in core:
            share = core.get(f"core_share_of_tower_{key}")
            lines.append(f"| `compress`, {label} | {core[f'core_{key}_s']:.4f} | "
                         f"{'–' if share is None else f'{100 * share:.2f} %'} |")
    return lines


def render(folder: Path, tiny: bool) -> str:
    steps = _steps(folder)
    bench = _load(folder, "bench_samples.json")
    baseline = _load(folder, "baseline.json")
    core = _load(folder, "core.json")
    device = (bench or {}).get("model", {}).get("device", "?")
    title = "## GPU run (`benchmarks/gpu.sh`)" if not tiny else "## `benchmarks/gpu.sh --tiny` (smoke run)"
    when = (bench or {}).get("created_at", "")
    lines = [title, ""]
    if tiny:
        lines += ["Tiny settings (random-weight tiny towers, a few frames): the script's smoke run, not GPU figures.",
                  ""]
    lines.append(f"Measured {when} on {device}.")
    lines.append("")
    lines += machine_section(folder, bench) + [""]
    lines += commands_section(folder, steps, tiny) + [""]
    lines += targets_section(bench, baseline, core) + [""]
    lines += bench_section(bench, steps, "bench_samples") + [""]
    decode_runs = [("sample clips", "bench_samples", bench),
                   ("synthetic clip (" + ((_load(folder, "clip.json") or {}).get("label") or "?") + ")", "bench_clip",
                    _load(folder, "bench_clip.json")),
                   ("sample clips", "bench_dinov2", _load(folder, "bench_dinov2.json"))]
    lines += decode_section(decode_runs, steps) + [""]
    lines += baseline_section(baseline, steps) + [""]
    lines += core_section(core, steps)
    # paths inside the output folder (the checkpoint, the clip) read as in the commands
    return "\n".join(lines).replace(str(folder.resolve()), "OUTDIR") + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    clip = sub.add_parser("clip", help="write the synthetic test clip")
    clip.add_argument("out", type=Path)
    clip.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT")
    clip.add_argument("--seconds", type=float, default=30.0)
    report = sub.add_parser("render", help="print the markdown section from gpu.sh's output folder")
    report.add_argument("folder", type=Path)
    report.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "clip":
        width, height = (int(x) for x in args.size.lower().split("x"))
        make_clip(args.out, width, height, args.seconds)
        info = {"path": str(args.out), "label": f"{width}x{height} H.264, {args.seconds:g} s", "width": width,
                "height": height, "seconds": args.seconds}
        (args.out.parent / "clip.json").write_text(json.dumps(info) + "\n")
        print(json.dumps(info))
        return 0
    sys.stdout.write(render(args.folder, args.tiny))
    return 0


if __name__ == "__main__":
    sys.exit(main())
