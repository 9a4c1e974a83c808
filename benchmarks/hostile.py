"""Hostile inputs and bad invocations against `aot compress` / `aot ask`: for each case, whether the
run ended cleanly (the documented exit code, within the time limit, no traceback, at most three
stderr lines, no escape characters printed raw, no process of the run left 10 s after its main
process ended) and how long it took. Prints one line per case and the tried / clean count per
kind.

    python benchmarks/hostile.py [--aot PATH/TO/aot] [--limit 60] [--only KIND]

Run it with the virtual environment of the checkout to check (`aot` is taken from the same bin
directory as the Python running this script unless --aot is given). It builds tiny random
checkpoints (tests/checkpoints.py) and its inputs in a temporary directory; each case runs in its
own process group, which is killed when the case is over.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SAMPLES = ROOT / "samples"
HOSTILE = ROOT / "tests" / "data" / "hostile"

from proctools import marked as find_marked  # noqa: E402  (tests/ is on the path)


def marked(marker: str) -> List[int]:
    return find_marked("AOT_HOSTILE_RUN", marker)


@dataclass
class Case:
    kind: str
    name: str
    args: List[str]
    expect: int
    kill_when: Optional[Callable[[str], bool]] = None  # SIGKILL the main process once this holds
    reap: bool = True  # reap the killed main process at once (a shell does; a busy parent may not)
    check: Optional[Callable[[str, str], Optional[str]]] = None  # extra check -> problem or None
    notes: Dict[str, str] = field(default_factory=dict)


def run_case(aot: str, case: Case, cwd: Path, limit: float) -> Dict[str, object]:
    marker = uuid.uuid4().hex
    env = dict(os.environ, AOT_HOSTILE_RUN=marker)
    env.pop("HF_HUB_OFFLINE", None)
    out_path, err_path = cwd / f".{marker}.out", cwd / f".{marker}.err"
    t0 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([aot, *case.args], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
        problem = None
        killed = False
        while proc.poll() is None:
            if time.monotonic() - t0 > limit:
                problem = f"still running after {limit:g} s"
                break
            if case.kill_when is not None and not killed and case.kill_when(marker):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                if not case.reap:
                    break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        if killed:
            gone_by = time.monotonic() + 10
            while [p for p in marked(marker) if p != proc.pid] and time.monotonic() < gone_by:
                time.sleep(0.1)
            left = [p for p in marked(marker) if p != proc.pid]
            problem = f"{len(left)} process(es) left 10 s after SIGKILL" if left else None
        else:
            if problem is None:
                # the main process ended: its workers must end too
                gone_by = time.monotonic() + 10
                while marked(marker) and time.monotonic() < gone_by:
                    time.sleep(0.1)
                if marked(marker):
                    problem = f"{len(marked(marker))} process(es) left 10 s after exit"
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for pid in marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    stdout = out_path.read_bytes().decode(errors="replace")
    stderr = err_path.read_bytes().decode(errors="replace")
    out_path.unlink()
    err_path.unlink()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if problem is None and not killed:
        if proc.returncode != case.expect:
            problem = f"exit {proc.returncode}, expected {case.expect}"
        elif "Traceback" in stderr:
            problem = "traceback"
        elif len(lines) > 3 and case.expect == 2:
            problem = f"{len(lines)} stderr lines"
        elif "\x1b" in stderr:
            problem = "raw escape character printed"
        elif case.check is not None:
            problem = case.check(stdout, stderr)
    return {"kind": case.kind, "name": case.name, "clean": problem is None, "problem": problem,
            "seconds": round(elapsed, 1), "exit": proc.returncode, "lines": len(lines)}


def build_cases(tmp: Path, siglip: Path, llava_cache: Optional[Path]) -> List[Case]:
    clip = str(SAMPLES / "realshort.mp4")
    base = ["compress", "--model", str(siglip), "--frames", "4", "--dtype", "fp32", "--decode-workers", "1"]
    cases: List[Case] = []
    # 1. hang triggers: an error after the workers started
    for name, extra in (("shard-size 0", ["--shard-size", "0"]), ("shard-size 0.5", ["--shard-size", "0.5"]),
                        ("anchors without keep-ratio", ["--anchors", "40"]),
                        ("keep-ratio alone", ["--keep-ratio", "0.3"]),
                        ("config shard_size -1", ["--config", str(HOSTILE / "config_shard_size_negative.json")])):
        cases.append(Case("hang after an error", name, [*base, clip, "-o", str(tmp / f"o-{len(cases)}"), *extra], 2))
    for name in ("cache_manifest_infinity", "cache_manifest_deep_nesting"):
        out = tmp / name
        shutil.copytree(HOSTILE / name, out)
        cases.append(Case("hang after an error", f"-o {name}", [*base, clip, "-o", str(out)], 2))
    # SIGKILL of the main process while workers decode
    many = tmp / "many"
    many.mkdir()
    for i in range(6):
        shutil.copy(SAMPLES / "bikes.mp4", many / f"v{i}.mp4")

    def workers_running(marker: str) -> bool:
        return len(marked(marker)) >= 4

    for reap in (True, False):
        cases.append(Case("SIGKILL of the main process", "reaped at once" if reap else "not reaped",
                          [*base, str(many), "-o", str(tmp / f"killed-{reap}"), "--decode-workers", "2"], 0,
                          kill_when=workers_running, reap=reap))
    # 6. input scanning
    loop_dir = tmp / "loop"
    loop_dir.mkdir()
    shutil.copy(clip, loop_dir / "good.mp4")
    os.symlink("loop.mp4", loop_dir / "loop.mp4")
    cases.append(Case("input scanning", "symlink loop in a directory", [*base, str(loop_dir), "-o", str(tmp / "s1")], 1))
    name_dir = tmp / "names"
    name_dir.mkdir()
    shutil.copy(clip, name_dir / "good.mp4")
    shutil.copy(clip, os.fsencode(name_dir) + b"/caf\xe9.mp4")
    cases.append(Case("input scanning", "non-UTF-8 file name", [*base, str(name_dir), "-o", str(tmp / "s2")], 1))
    cases.append(Case("input scanning", "JSONL manifest row not an object",
                      [*base, "--manifest", str(HOSTILE / "manifest_int_row.jsonl"), "-o", str(tmp / "s3")], 2))
    fifo = tmp / "pipe.mp4"
    os.mkfifo(fifo)
    cases.append(Case("input scanning", "named pipe as input", [*base, str(fifo), clip, "-o", str(tmp / "s4")], 1))
    cases.append(Case("input scanning", "device as input", [*base, "/dev/null", clip, "-o", str(tmp / "s5")], 1))
    # 8. printing, hashing, timeouts, remote code
    evil = tmp / "evil"
    evil.mkdir()
    shutil.copy(clip, evil / "good.mp4")
    (evil / "x\x1b[31m\nred.mp4").write_text("not a video")
    cases.append(Case("printing, hashing, timeout, remote code", "id with ANSI escape and newline",
                      [*base, str(evil), "-o", str(tmp / "p1")], 1))
    sparse = tmp / "sparse"
    sparse.mkdir()
    with open(sparse / "huge.mp4", "wb") as handle:
        handle.truncate(10 << 30)

    def quick(stdout: str, stderr: str) -> Optional[str]:
        return None

    cases.append(Case("printing, hashing, timeout, remote code", "10 GB sparse file",
                      [*base, str(sparse / "huge.mp4"), clip, "-o", str(tmp / "p2")], 1, check=quick))
    cases.append(Case("printing, hashing, timeout, remote code", "--decode-timeout 0",
                      [*base, clip, "-o", str(tmp / "p3"), "--decode-timeout", "0"], 2))
    if llava_cache is not None:
        custom = tmp / "custom"
        custom.mkdir()
        ran = tmp / "code-ran"
        (custom / "config.json").write_text(json.dumps({"model_type": "evil_llava",
                                                        "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
        (custom / "evil.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")

        def no_code(stdout: str, stderr: str) -> Optional[str]:
            return "checkpoint code ran" if ran.exists() else None

        cases.append(Case("printing, hashing, timeout, remote code", "aot ask on a checkpoint with custom code",
                          ["ask", str(llava_cache), "What?", "--model", str(custom)], 2, check=no_code))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aot", default=str(Path(sys.executable).parent / "aot"))
    ap.add_argument("--limit", type=float, default=60.0, help="seconds a case may run")
    ap.add_argument("--only", help="run only the kinds containing this text")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from checkpoints import "
                        "build_siglip, build_llava_hf; build_siglip(sys.argv[2]); build_llava_hf(sys.argv[3])",
                        str(ROOT / "tests"), str(tmp / "siglip"), str(tmp / "llava")], check=True, capture_output=True)
        llava_cache = tmp / "llava.safetensors"
        made = subprocess.run([args.aot, "compress", str(SAMPLES / "realshort.mp4"), "--model", str(tmp / "llava"),
                               "--frames", "4", "--dtype", "fp32", "-o", str(llava_cache), "-q"], capture_output=True)
        cases = build_cases(tmp, tmp / "siglip", llava_cache if made.returncode == 0 else None)
        results = []
        for case in cases:
            if args.only and args.only not in case.kind:
                continue
            res = run_case(args.aot, case, tmp, args.limit)
            results.append(res)
            status = "clean" if res["clean"] else f"NOT CLEAN: {res['problem']}"
            print(f"{res['kind']:42s} {res['name']:42s} {res['seconds']:6.1f} s  exit {res['exit']}  "
                  f"{res['lines']} stderr lines  {status}", flush=True)
        print()
        for kind in dict.fromkeys(r["kind"] for r in results):
            mine = [r for r in results if r["kind"] == kind]
            print(f"{kind}: {sum(r['clean'] for r in mine)} clean of {len(mine)} tried")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
