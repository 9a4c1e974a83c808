"""Plain-text rendering of a ``run_bench`` report."""
from __future__ import annotations

from typing import List, Optional

from .stages import STAGES


def human_bytes(n: Optional[float]) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"-"``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _num(x: Optional[float], digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def machine_line(m: dict, load: dict) -> str:
    gpu = ", ".join(g["name"] for g in m["gpus"]) or "no GPU"
    loads = load.get("start"), load.get("end")
    load_text = " -> ".join(f"{l[0]:.2f}" for l in loads if l) or "-"
    return (f"machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} cores "
            f"(torch {m['torch_threads']} threads), {human_bytes(m['memory_bytes'])} RAM, {gpu}; "
            f"torch {m['torch']}, transformers {m['transformers']}, python {m['python']}; "
            f"load average (1 min) {load_text}")


def render_report(r: dict) -> str:
    """The report as lines of text for a terminal."""
    model = r["model"]
    totals = r["totals"]
    lines: List[str] = [
        f"aot bench: {totals['videos']} video(s), {totals['frames']} frames; {model['model']} "
        f"({model['family']}, {model['dtype']} on {model['device']}, {model['batch_frames']} frames per pass, "
        f"{r['layers_run']} layers, score layers {r['score_layers']}); best of {r['repeat']}",
        machine_line(r["machine"], r["load_average"]),
        "",
        f"{'stage (one at a time)':<24}{'seconds':>10}{'share':>9}",
    ]
    stages = r["stages_s"]
    total = sum(stages[s] for s in STAGES)
    labels = {"tower": "tower (plain SDPA)", "scores": "scores (scored - plain)"}
    for s in STAGES:
        share = stages[s] / total * 100 if total > 0 else 0.0
        lines.append(f"{labels.get(s, s):<24}{stages[s]:>10.3f}{share:>8.1f}%")
    lines.append(f"{'sum':<24}{total:>10.3f}")
    e2e, plain, scored = r["end_to_end"], r["tower_only"], r["scored_tower"]
    lines += [
        "",
        f"end to end (aot compress pipeline): {e2e['seconds']:.3f} s, {_num(e2e['videos_per_s'], 4)} videos/s, "
        f"{_num(e2e['frames_per_s'], 2)} frames/s, {_num(e2e['tokens_per_s'], 1)} tokens/s",
        f"tower only (plain SDPA pass):       {plain['seconds']:.3f} s, {_num(plain['frames_per_s'], 2)} frames/s",
        f"scored tower pass:                  {scored['seconds']:.3f} s, {_num(scored['frames_per_s'], 2)} frames/s "
        f"(end-to-end throughput / scored-pass throughput {_num(r['ratios']['end_to_end_vs_scored_tower'], 3)})",
        f"peak memory, end to end: host {human_bytes(e2e['peak_host_bytes'])} RSS (with decode workers "
        f"{human_bytes(e2e['peak_host_tree_bytes'])}), device {human_bytes(e2e['peak_device_bytes'])}",
        f"tower pass working memory ({r['memory_basis']}): plain "
        f"{human_bytes(_working(plain, model['device']))}, scored {human_bytes(_working(scored, model['device']))}",
    ]
    if r.get("throughput"):
        lines += [""] + throughput_lines(r["throughput"])
    c = r["cache"]
    lines.append(
        f"cache: {human_bytes(c['bytes_per_video'])} per video on disk ({c['tokens_per_video']:.0f} tokens x "
        f"{c['token_dim']} {c['token_dtype']}); with every token ({c['all_tokens_per_video']:.0f}): "
        f"{human_bytes(c['all_tokens_bytes_per_video'])} -> {_num(r['ratios']['cache_vs_all_tokens'], 4)}x")
    ratios = r["ratios"]
    if r["repeat"] > 1:
        lines.append(f"median of per-run ratios (back-to-back measurements): end to end / tower only "
                     f"{_num(ratios['end_to_end_vs_tower_paired'], 3)}, scored / plain "
                     f"{_num(ratios['scored_vs_plain_time_paired'], 3)}")
    lines += ["", "targets (measured on " + model["device"] + ")"]
    for t in r["targets"]:
        verdict = "-" if t["met"] is None else ("met" if t["met"] else "NOT met")
        where = "" if t["where"] == "any" else f" (promised on {t['where']})"
        lines.append(f"  {t['name']:<52}{_num(t['value'], 3):>8} {t['op']} {t['limit']:<5} {verdict}{where}")
    return "\n".join(lines)


def throughput_lines(t: dict) -> List[str]:
    """The decode side against the main process's stages, and the bound."""
    d = t["decode"]
    workers = f"{d['workers']} worker{'s' if d['workers'] != 1 else ''}" if d["workers"] else "in this process"
    rows = [
        (f"decode stage ({workers})", d),
        ("tower (plain SDPA pass)", t["tower"]),
        ("tower (scored pass)", t["scored_tower"]),
        ("main process (stages in turn)", t["main_process"]),
        ("end to end", t["end_to_end"]),
    ]
    lines = [f"{'throughput':<32}{'frames/s':>10}{'videos/s':>10}"]
    for label, block in rows:
        lines.append(f"{label:<32}{_num(block['frames_per_s'], 2):>10}{_num(block['videos_per_s'], 3):>10}")
    share = t["main_stage_share"]
    if t["stage"] == "decode":
        why = (f"the decode stage runs at {_num(t['decode_vs_main'], 2)}x the main process's pace "
               f"(preprocess + scored tower + method + write)")
    else:
        why = (f"decoding runs {_num(t['decode_vs_main'], 2)}x ahead of the main process, whose {t['stage']} "
               f"stage takes {_num(100 * share[t['stage']], 1) if share[t['stage']] is not None else '-'} % "
               f"of its time")
    lines.append(f"bound: {t['bound']} ({why}; decode with {d['jobs']} videos per run)")
    return lines


def _working(block: dict, device: str) -> Optional[int]:
    return block["device_working_bytes"] if device.startswith("cuda") else block["host_working_bytes"]
