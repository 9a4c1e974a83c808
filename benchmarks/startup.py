"""Start-up and fail-fast timings of the `aot` command line: `--help`, `--version`, `inspect --json`
on a one-video cache, a rerun with nothing to do, and bad invocations. Prints one line per
measurement (best and median wall seconds of N runs, peak RSS) and the machine load.

    python benchmarks/startup.py [--repeat 5] [--aot PATH/TO/aot]

Run it with the virtual environment of the checkout to measure (`aot` is taken from the same bin
directory as the Python running this script unless --aot is given). It builds a tiny random SigLIP
checkpoint (tests/checkpoints.py) and a one-video cache from samples/realshort.mp4 in a temporary
directory. Import profiles: `python -X importtime -c "import aot_cli.cli"` (see RESULTS.md).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd, cwd, repeat, env=None, limit=120.0):
    """(best s, median s, peak RSS MB of the process, last exit code or "timeout", stderr lines of
    the last run). A run still going after ``limit`` seconds is killed with its process group."""
    times, rss, code, lines = [], 0.0, None, 0
    for _ in range(repeat):
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - t0 > limit:
                    os.killpg(proc.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything the run left behind
            except OSError:
                pass
            proc.returncode = os.waitstatus_to_exitcode(status)
            rss = max(rss, usage.ru_maxrss / 1024)
            code = "timeout" if times[-1] > limit else proc.returncode
            err.seek(0)
            lines = len([ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()])
        if code == "timeout":
            break
    return min(times), statistics.median(times), rss, code, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--aot", default=str(Path(sys.executable).parent / "aot"))
    ap.add_argument("--limit", type=float, default=120.0, help="seconds after which a run is killed")
    args = ap.parse_args()
    aot = args.aot
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "siglip"  # built in a child process, so this one stays small (RSS is per child)
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from checkpoints import "
                        "build_siglip; build_siglip(sys.argv[2])", str(ROOT / "tests"), str(ckpt)], check=True,
                       capture_output=True)
        clip = ROOT / "samples" / "realshort.mp4"
        setup = subprocess.run([aot, "compress", str(clip), "-o", str(tmp / "one.safetensors"), "--model", str(ckpt),
                                "--frames", "4", "--dtype", "fp32", "-q"], capture_output=True, text=True)
        if setup.returncode:
            sys.exit(f"setup failed: {setup.stderr}")
        cache_args = [aot, "compress", str(clip), "-o", str(tmp / "cache"), "--model", str(ckpt), "--frames", "4",
                      "--dtype", "fp32", "-q"]
        subprocess.run(cache_args, check=True, capture_output=True, cwd=tmp)  # the cwd of the timed runs: same ids
        cases = [
            ("aot --help", [aot, "--help"], None),
            ("aot --version", [aot, "--version"], None),
            ("aot inspect --json (one video)", [aot, "inspect", str(tmp / "one.safetensors"), "--json"], None),
            ("rerun, nothing to do", cache_args, None),
            ("bad: --ratio 2", [aot, "compress", str(clip), "--ratio", "2", "--model", str(ckpt),
                                "-o", str(tmp / "bad1")], None),
            ("bad: --anchors 40 (no --keep-ratio)", [aot, "compress", str(clip), "--anchors", "40", "--model",
                                                     str(ckpt), "-o", str(tmp / "bad2")], None),
            ("bad: missing hub model", [aot, "compress", str(clip), "--model", "no-such-org/no-such-model",
                                        "-o", str(tmp / "bad3")],
             {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}),
        ]
        for name, cmd, env in cases:
            best, median, rss, code, lines = timed(cmd, tmp, args.repeat, env, args.limit)
            print(f"{name:40s} best {best:6.2f} s  median {median:6.2f} s  peak RSS {rss:5.0f} MB  exit {code}  "
                  f"stderr lines {lines}")
        created = sorted(p.name for p in tmp.iterdir() if p.name.startswith("bad"))
        print(f"files created by bad invocations: {created or 'none'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
