"""The `aot` command line: parses flags, calls the library, prints. No logic of its own.

Imports stay light: this module imports only click, so `aot --help` and `--version` load neither
torch, transformers nor the model code, and each command imports what it needs when it runs
(`inspect` only the cache reader and the statistics). Every command validates flags
and config files (:mod:`aot_cli.pipeline.settings`) before it loads a model, decodes, starts a
process or creates a file.
"""
from __future__ import annotations

import sys

import click


EXIT_FAILED_VIDEOS = 1
EXIT_USAGE = 2


def _fail(msg: object, code: int = EXIT_USAGE):
    """One ``aot: error: ...`` line on stderr (control characters escaped) and exit."""
    from .pipeline.progress import print_error

    print_error(msg)
    sys.exit(code)


class _UsageLine(click.ClickException):
    """A command-line parsing error (unknown flag, a value of the wrong type, a missing
    argument) shown like every other usage error: one ``aot: error: ...`` line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        from .pipeline.progress import print_error

        print_error(self.message)


def _one_line(exc: click.UsageError, fallback: str = "aot") -> _UsageLine:
    where = exc.ctx.command_path if exc.ctx is not None else fallback
    return _UsageLine(f"{exc.format_message().rstrip('.')} (see '{where} --help')")


class _Commands(click.Group):
    """The ``aot`` group: click's parsing errors become one line instead of usage text."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError:
            raise  # bare `aot`: the help text, as click shows it
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # raised while a subcommand parses its own flags
            sub = ctx.invoked_subcommand  # some parser errors carry no context: name the command here
            raise _one_line(exc, f"{ctx.command_path} {sub}" if sub else ctx.command_path) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aot-cli", prog_name="aot")
def main():
    """Compress video-LLM visual tokens with AOT and cache them in safetensors.

    \b
    Exit codes: 0 done, 1 some video failed, 2 bad flags / config / inputs / model / output
    (checked before anything runs), 128+N interrupted by signal N after committing finished work.
    """


# ------------------------------------------------------------------ options shared by commands

# budget: how many tokens are kept (aot_cli.core.AOTConfig; sweep has its own --ratios)
BUDGET_OPTIONS = (
    click.option("--ratio", type=float, help="Keep floor(RATIO x frames x tokens-per-frame + 0.5) tokens exactly. Default 0.1."),
    click.option("--method", type=click.Choice(["aot", "none", "random", "pool", "attention"]),
                 help="'aot' (default); 'none': no compression (the model's own tokens); baselines with the same exact "
                      "budget: 'random' pruning, uniform spatial 'pool'ing, 'attention' top-k (docs/method.md §10.1)."),
    click.option("--preset", type=click.Choice(["reference", "quality"]),
                 help="Method preset: 'reference' (the released code, default) or 'quality' (anchors from attention and "
                      "an even grid, every token merged into its anchor by balanced OT; docs/method.md §10.3)."),
    click.option("--seed", type=click.IntRange(min=0), help="Seed of --method random (default 0)."),
    click.option("--anchors", "anchors", type=int, help="Reference rules: anchors per frame V (with --keep-ratio)."),
    click.option("--keep-ratio", type=float, help="Reference rules: quantile keep ratio of the inter-frame stage."),
)

# method: the other AOT parameters (aot_cli.core.AOTConfig)
METHOD_OPTIONS = (
    click.option("--global-ratio", type=float, help="Share of global anchors (default 0.5)."),
    click.option("--window", type=int, help="Local-anchor window side in cells (default: 3x3 windows)."),
    click.option("--pooling", type=click.Choice(["auto", "bilinear", "average", "none"]), default="auto", show_default=True,
                  help="2x2 pooling after the intra-frame merge; auto = the model profile's."),
    click.option("--clip-length", type=int, help="Frames per clip (default: the profile's, 4 OneVision / 8 LLaVA-Video)."),
    click.option("--segments", type=click.Choice(["fixed", "dynamic"]), help="Fixed clips or dynamic segments (docs/method.md §7)."),
    click.option("--dynamic-c", type=int, help="Dynamic segments: number of lowest-similarity cuts + 1 (default 8)."),
    click.option("--dynamic-tau", type=float, help="Dynamic segments: also cut below this similarity (default 0.8)."),
    click.option("--keyframe-once/--keyframe-twice", default=None,
                  help="Emit each clip's keyframe once (as merged anchors) or twice (raw and merged, the released "
                       "code). Default: twice, once for the Qwen profiles (docs/method.md)."),
    click.option("--no-inter", is_flag=True, default=None, help="Skip the inter-frame stage (as the published LLaVA-Video run)."),
    click.option("--intra-update", type=click.Choice(["reference", "normalized"]), help="Intra-frame OT update rule."),
    click.option("--intra-stop", type=click.Choice(["video", "frame"]), help="Intra-frame Sinkhorn stopping: all frames together (reference) or per frame."),
    click.option("--sinkhorn-iters", type=int, help="Sinkhorn iteration cap (default 100)."),
    click.option("--sinkhorn-tol", type=float, help="Sinkhorn stopping threshold (default 1e-2)."),
    click.option("--log-domain", is_flag=True, default=None, help="Log-domain Sinkhorn (automatic when the kernel would underflow)."),
)

# decode: which frames are read (aot_cli.video.DecodeConfig)
DECODE_OPTIONS = (
    click.option("--frames", type=int, help="Frames sampled uniformly over the video (default: the profile's, 32 or 64)."),
    click.option("--fps", type=float, help="Sample at this rate instead (capped by --max-frames)."),
    click.option("--max-frames", type=int, help="Cap for --fps sampling."),
    click.option("--start", type=float, help="Start of the sampled span, seconds."),
    click.option("--end", type=float, help="End of the sampled span, seconds."),
    click.option("--decoder", type=click.Choice(["auto", "decord", "pyav"]), help="auto/pyav: PyAV, seeking to "
                  "keyframes where the file's index allows it, else reading in order; decord: decord, kept only where "
                  "its pictures match PyAV's. All give the pictures of a sequential FFmpeg decode."),
    click.option("--decode-timeout", type=float, help="Seconds without progress before reading a video is abandoned "
                  "as hung and its decoder process killed (default 60; must be > 0)."),
    click.option("--stream", type=int, metavar="N", help="Read video stream N (container index; default: FFmpeg's "
                  "best video stream, never a cover picture)."),
    click.option("--decoder-log", type=click.Choice(["quiet", "error", "warning", "info", "debug"]),
                  help="FFmpeg/decord messages shown on stderr (default quiet)."),
    click.option("--seek", type=click.Choice(["exact", "keyframe"]), help="exact (default): the sampled frames; "
                  "keyframe: each sampled frame replaced by the keyframe at or before it (one keyframe decode per "
                  "frame, much faster on long GOPs; the frames used are recorded). README 'Decoding'."),
    click.option("--decode-size", type=click.Choice(["auto", "native", "tower"]), help="Size pictures are decoded "
                  "at: auto (default; the model's choice: native for the Qwen families, whose processor resizes "
                  "native frames; about twice the tower's input for the others), native, or tower (about twice the "
                  "tower's input: less memory on large videos). README 'Decoding'."),
    click.option("--frame-limit", type=int, help="Most frames one video may give; more is refused (default 1024)."),
    click.option("--pixel-limit", type=int, help="Most pixels (width x height) a video's pictures may have; larger "
                  "videos are refused (default 67108864 = 8192x8192)."),
)

# model: the vision tower (aot_cli.models.ModelConfig)
MODEL_OPTIONS = (
    click.option("--model", help="Hub id, local directory or named model (default google/siglip-so400m-patch14-384)."),
    click.option("--revision", help="Hub revision of --model."),
    click.option("--profile", type=click.Choice(["siglip", "siglip2", "clip", "dinov2", "llava-onevision", "llava-video",
                                                 "qwen2.5-vl", "qwen3-vl", "qwen3.5"]),
                  help="Override the model profile (frames, pooling, clips, newline)."),
    click.option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ..."),
    click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), help="Tower dtype."),
    click.option("--batch-frames", type=int, help="Frames per tower forward; short videos share one (default 16)."),
    click.option("--score-layers", help="Shallow,deep attention layers for anchor scores (default 5,-2)."),
)

# storage and pipeline: stored dtype, decode workers, commit timing
PIPELINE_OPTIONS = (
    click.option("--save-dtype", type=click.Choice(["model", "fp32", "bf16", "fp16"]), help="Dtype of stored tokens."),
    click.option("--decode-workers", type=int, help="Processes that read videos ahead of the tower (0: in the main "
                  "process, without the hard decode timeout). Default: this process's CPUs less one with the tower "
                  "on a GPU (at most 32), one per 8 CPUs with it on the CPU (docs/cluster.md)."),
    click.option("--flush-every", type=float, metavar="SECONDS", help="Commit finished videos once the oldest has "
                  "waited this long (0: after every video). Default 5."),
)


CONFIG_HELP = ("JSON or TOML file of options: keys are the flag names (frames, decode-timeout, anchors, ...), at "
               "the top level or in sections decode/model/method/storage; flags override it.")


def with_options(*groups):
    """Apply option groups to a command, in the order given (compress, bench and sweep share them)."""
    def apply(fn):
        for group in reversed(groups):
            for option in reversed(group):
                fn = option(fn)
        return fn
    return apply


# ------------------------------------------------------------------------------------- compress

@main.command()
@click.argument("inputs", nargs=-1)
@click.option("-o", "--output", type=click.Path(), help="A .safetensors file (one video) or a cache directory. "
              "Default: <name>.aot.safetensors for one video file, aot-cache/ otherwise.")
@click.option("--list", "list_file", metavar="FILE", help="File with one video path per line ('-' = stdin).")
@click.option("--manifest", metavar="FILE", help="CSV or JSONL manifest; other columns go into each video's metadata.")
@click.option("--path-column", default="path", show_default=True, help="Manifest column holding the video path.")
@click.option("--id", "id_mode", type=click.Choice(["path", "hash"]), default="path", show_default=True,
              help="Video ids: relative path, or content sha256.")
@click.option("--config", "config_file", metavar="FILE", help=CONFIG_HELP)
@with_options(BUDGET_OPTIONS, METHOD_OPTIONS, DECODE_OPTIONS, MODEL_OPTIONS, PIPELINE_OPTIONS)
@click.option("--shard-size", help="Close cache shards at this size (default 1GiB; 500MB, 2GiB, bytes).")
@click.option("--overwrite", is_flag=True, help="Recompute videos already in the cache.")
@click.option("--jsonl", is_flag=True, help="One JSON line per video on stdout (an ok video once it is committed).")
@click.option("--num-shards", type=int, help="Split the inputs into this many parts (with --shard-id).")
@click.option("--shard-id", type=int, help="Which part this process takes (0-based).")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.option("--engine", type=click.Choice(["local", "ray"]), help="Who schedules the videos: this process "
              "(local, the default) or model actors on Ray (needs pip install 'aot-cli[ray]'; docs/cluster.md).")
@click.option("--ray-address", metavar="ADDR", help="--engine ray: join this running cluster ('auto' or HOST:PORT "
              "of its head) and leave it running. Default: start a private local Ray for the run, stopped at its end.")
@click.option("--ray-actors", type=int, help="--engine ray: model actors (each loads the model once). Default: one "
              "per GPU x --ray-actors-per-gpu, or one per node without GPUs.")
@click.option("--ray-actors-per-gpu", type=int, help="--engine ray: actors sharing one GPU (default 1).")
@click.option("--ray-decode", type=click.Choice(["actor", "tasks"]), help="--engine ray: decode inside each actor "
              "with its own --decode-workers processes (actor, the default), or in Ray CPU tasks that decode at the "
              "tower's size, --decode-workers of them ahead per actor (tasks).")
def compress(inputs, output, list_file, manifest, path_column, id_mode, config_file, **flags):
    """Compress videos into a token cache.

    \b
    aot compress video.mp4 --ratio 0.1
    aot compress videos/ -o cache/ --model llava-hf/llava-onevision-qwen2-0.5b-ov-hf
    """
    from .pipeline.cli_support import run_compress

    code = run_compress(inputs=inputs, output=output, list_file=list_file, manifest=manifest,
                        path_column=path_column, id_mode=id_mode, config_file=config_file, flags=flags)
    sys.exit(code)


# ---------------------------------------------------------------------------------------- bench

@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--config", "config_file", metavar="FILE", help=CONFIG_HELP)
@with_options(BUDGET_OPTIONS, METHOD_OPTIONS, DECODE_OPTIONS, MODEL_OPTIONS, PIPELINE_OPTIONS)
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run every measurement this many times; times are the best run, memory the highest peak.")
@click.option("--warmup/--no-warmup", default=True, show_default=True, help="One untimed plain and scored tower pass first.")
@click.option("--json", "json_path", metavar="FILE", help="Also write the whole report as JSON ('-': JSON on stdout only).")
@click.option("-o", "--output", "workdir", type=click.Path(), help="Keep the caches the benchmark writes in this "
              "directory (default: a temporary directory, removed afterwards).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def bench(inputs, config_file, json_path, workdir, repeat, warmup, quiet, **flags):
    """Time the pipeline on videos: per-stage seconds, videos/frames/tokens per second, peak memory,
    bytes per video on disk, and the same frames through the tower alone.

    \b
    aot bench samples/ --model llava-hf/llava-onevision-qwen2-0.5b-ov-hf --batch-frames 32 --json bench.json
    """
    from .bench.cli_support import run_bench_command

    code = run_bench_command(inputs=inputs, config_file=config_file, flags=flags,
                             json_path=json_path, workdir=workdir, repeat=repeat, warmup=warmup, quiet=quiet)
    sys.exit(code)


# ------------------------------------------------------------------------------------- inspect

@main.command()
@click.argument("path", type=click.Path())
@click.option("--video", "video_id", help="Show one video: its id, or its file name when that is unique.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--frames/--no-frames", default=None, help="Per-frame table (default: on with --video).")
@click.option("--overlay", "overlay_png", type=click.Path(dir_okay=False),
              help="Write a contact-sheet PNG of the video: frames decoded again, with anchors, kept and merged "
                   "tokens, keyframes and clips drawn on them.")
@click.option("--plot", "plot_png", type=click.Path(dir_okay=False),
              help="Write a PNG bar chart of tokens per frame against time (needs matplotlib: pip install 'aot-cli[viz]').")
@click.option("--source", type=click.Path(dir_okay=False),
              help="--overlay: the source video, when it is no longer where the cache says (its sha256 must match).")
@click.option("--width", type=click.IntRange(min=224), help="--overlay: sheet width in pixels (default 2000, fits a "
              "screen); wider for more detail.")
@click.option("--cols", type=click.IntRange(min=1), help="--overlay: frames per row (default: as many as keep the "
              "grid cells readable, at most 8).")
@click.option("--cell-px", type=click.FloatRange(min=1), help="--overlay: size of an output-grid cell in pixels; the "
              "sheet is as wide as that makes it (instead of --width).")
def inspect(path, video_id, as_json, frames, overlay_png, plot_png, source, width, cols, cell_px):
    """Statistics of a cache: tokens, achieved ratio, per-frame anchors / kept / merged, clips.

    Exit status: 0 all listed; 1 listed, but some entries could not be read (reported one per
    line) or index rows / shards were skipped; 2 the cache cannot be read, or no such --video."""
    from .inspect.command import run_inspect

    sys.exit(run_inspect(path, video_id, as_json, frames, overlay_png, plot_png, source, cols, cell_px, width))


# ------------------------------------------------------------------------------------- compact

@main.command()
@click.argument("path", metavar="CACHE", type=click.Path())
@click.option("--shard-size", help="Fill new shards to about this size (default 1GiB; 500MB, 2GiB, bytes).")
@click.option("--dry-run", is_flag=True, help="Say what would be freed and rewritten; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def compact(path, shard_size, dry_run, as_json, quiet):
    """Rewrite a cache directory's videos into full shards and free what no reader uses.

    Frees videos stored again later, shards a killed run left, bytes never committed and old
    failure rows; every video reads back bit-identical. Safe to interrupt (run it again) and to
    read the cache meanwhile; refused while a writer (aot compress) holds the cache.

    \b
    aot compact cache/
    aot compact cache/ --dry-run
    """
    from .cache.cli_support import run_compact

    sys.exit(run_compact(path, shard_size, dry_run, as_json, quiet))


# ------------------------------------------------------------------------------------- ask

@main.command()
@click.argument("cache_path", metavar="CACHE", type=click.Path())
@click.argument("question")
@click.option("--video", "video_id", help="Id of the cached video (default: the only one in CACHE).")
@click.option("--model", "checkpoint", required=True,
              help="The transformers checkpoint whose vision side made the cache (LLaVA-OneVision, LLaVA-Video, "
                   "Qwen2.5-VL, Qwen3-VL, Qwen3.5): local dir or hub id.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True, help="Tokens to generate.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True,
              help="LLM dtype (auto: bf16 on CUDA, fp32 on CPU).")
def ask(cache_path, question, video_id, checkpoint, max_new_tokens, device, dtype):
    """Answer QUESTION about a cached video with the full video LLM (the cached tokens in place of its own video
    features, at their positions)."""
    from .cache import CacheError
    from .downstream import DownstreamError, ask_cached_video
    from .pipeline.cli_support import quiet_transformers

    try:
        quiet_transformers()
        answer = ask_cached_video(cache_path, video_id, checkpoint, question, max_new_tokens=max_new_tokens,
                                  device=device, dtype=dtype)
    except (CacheError, DownstreamError) as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        _fail(f"unexpected {type(e).__name__}: {e}")
    click.echo(answer.text)


# ------------------------------------------------------------------------------------- sweep

@main.command()
@click.argument("inputs", nargs=-1)
@click.option("--list", "list_file", metavar="FILE", help="File with one video path per line ('-' = stdin).")
@click.option("--manifest", metavar="FILE", help="CSV or JSONL manifest of videos (see compress).")
@click.option("--path-column", default="path", show_default=True, help="Manifest column holding the video path.")
@click.option("--ratios", default="0.05,0.1,0.15,0.25", show_default=True, help="Ratios to compress at, comma-separated.")
@click.option("--reference", "references", default="126:0.3,108:0.1", show_default=True,
              help="Released-code rules to compare, ANCHORS:KEEP_RATIO pairs; anchors count on a 27x27 tower grid and "
                   "are scaled to the model's grid. 'none' to skip.")
@click.option("--plot", "plot_png", type=click.Path(dir_okay=False),
              help="Write requested vs achieved retention and the figures as a PNG (the means, for several videos; "
                   "needs matplotlib: pip install 'aot-cli[viz]').")
@click.option("--methods", default="aot", show_default=True,
              help="Methods to compare, comma-separated: aot, quality (the quality preset), random, pool, attention.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the random method (default 0).")
@click.option("--fidelity/--no-fidelity", default=True, show_default=True,
              help="Coverage, salient coverage and OT error against the uncompressed tokens (docs/method.md §10.2; "
                   "the OT error needs POT: pip install 'aot-cli[fidelity]', else its column is left out).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts: every video's points and the summary.")
@click.option("--config", "config_file", metavar="FILE", help=CONFIG_HELP)
@with_options(METHOD_OPTIONS, DECODE_OPTIONS, MODEL_OPTIONS)
def sweep(inputs, list_file, manifest, path_column, ratios, references, methods, fidelity, plot_png, as_json,
          config_file, **flags):
    """Compress videos with several methods and ratios from one tower run each; print (and plot) the
    token counts and how faithfully each result stands for the uncompressed tokens, per video and
    as the mean over all of them, marking the method that leads each figure at each ratio.

    \b
    aot sweep clip.mp4 --model llava-hf/llava-onevision-qwen2-0.5b-ov-hf --ratios 0.05,0.1,0.25 --plot sweep.png
    aot sweep videos/ --model dinov2-small-offline --methods aot,quality,random,pool,attention --json
    """
    from .inspect.sweep_command import run_sweep_command

    sys.exit(run_sweep_command(inputs=inputs, list_file=list_file, manifest=manifest, path_column=path_column,
                               ratios=ratios, references=references, methods=methods, fidelity=fidelity,
                               plot_png=plot_png, as_json=as_json, config_file=config_file, flags=flags))


if __name__ == "__main__":
    main()
