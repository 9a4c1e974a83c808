"""Hostile caches against the reader and `aot inspect`: deep nesting anywhere, non-finite and huge
numbers, fields of the wrong type, tensors of the wrong dtype or shape, ids with terminal escape
sequences, FIFOs, links inside the cache, huge files, a shard cut short while it is read. The
reader raises only CacheError (one line, naming the file), one bad entry never hides the others,
and `aot inspect` ends quickly with its documented exit status, at most three stderr lines and
nothing unescaped on the terminal."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
import torch
from click.testing import CliRunner

from aot_cli.cache import CacheError, TokenCache
from aot_cli.cli import main
from cachefiles import (cache_dir, edit_header, edit_videos, index_part, make_fifo, nested, one_line_each,
                        put_header, read_everything, shards_of, single_file, split_file, video_meta,
                        video_tensors)

REPO = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"
RAW_CONTROLS = ("\x1b", "\x9b", "\x07", "\r", "\u202e", "\x00")


def inspect(*args: str):
    return CliRunner().invoke(main, ["inspect", *args])


def check_clean_run(result, codes=(0, 1, 2)) -> list:
    """No traceback, a documented status, at most three stderr lines, nothing raw; the stderr lines."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in codes, (result.exit_code, result.output)
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) <= 3, err
    assert "Traceback" not in result.output
    for text in (result.stdout, result.stderr):
        for ch in RAW_CONTROLS:
            assert ch not in text, (ch, text)
    return err


# -- the cases shipped in tests/data/hostile -------------------------------------------------------

SHIPPED = {  # name: (TokenCache outcome, inspect exit status, words of the message)
    "cache_manifest_infinity": ("refused", 2, "Infinity"),
    "cache_manifest_deep_nesting": ("refused", 2, "nests arrays/objects more than 64 levels"),
    "f16_videos_deep_nesting.safetensors": ("refused", 2, "nests arrays/objects more than 64 levels"),
    "f18_meta_is_string.safetensors": ("bad", 1, "meta is a string, not an object"),
    "f27_id_ansi_newline.safetensors": ("ok", 0, None),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_hostile_cases_through_token_cache(name):
    path = HOSTILE / name
    expected, _, words = SHIPPED[name]
    out = read_everything(path)
    one_line_each(out.messages, start=str(path))
    if expected == "refused":
        assert out.error and words in out.error
    elif expected == "bad":
        assert out.error is None and list(out.bad) == ["clips/c00.mp4"] and words in out.bad["clips/c00.mp4"]
        assert "'v0'" in out.bad["clips/c00.mp4"] or "(v0)" in out.bad["clips/c00.mp4"]  # names the entry
    else:
        assert out.ids == ["evil\x1b[2J\x1b[31mRED\nnewline\rCR"] and not out.bad


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_hostile_cases_through_inspect(name):
    path = HOSTILE / name
    _, code, words = SHIPPED[name]
    for args in ([str(path)], [str(path), "--json"]):
        result = inspect(*args)
        check_clean_run(result, (code,))
        if words:  # on stderr when the cache is refused; in the listing (or JSON) for one bad video
            assert words in result.output, result.output
    if name.startswith("f27"):
        table = inspect(str(path))
        assert "evil\\x1b[2J\\x1b[31mRED\\nnewline\\rCR" in table.stdout  # escaped, visible
        stats = json.loads(inspect(str(path), "--json").stdout)
        assert stats["videos"][0]["id"] == "evil\x1b[2J\x1b[31mRED\nnewline\rCR"  # JSON stays exact


def test_shipped_hostile_cases_in_a_real_process():
    """The command as users run it: a separate process, with a time limit."""
    for name, code in (("f27_id_ansi_newline.safetensors", 0), ("cache_manifest_deep_nesting", 2),
                       ("f18_meta_is_string.safetensors", 1)):
        proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "inspect", str(HOSTILE / name)],
                              capture_output=True, timeout=300, cwd=REPO)
        out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == code, (name, proc.returncode, err)
        assert "Traceback" not in err and len([l for l in err.splitlines() if l.strip()]) <= 3, err
        assert not any(ch in out + err for ch in RAW_CONTROLS), (out, err)


# -- more of each kind, built here ---------------------------------------------------------------

def _single(tmp: Path) -> Path:
    return single_file(tmp / "one.safetensors", "clips/a.mp4")


def _dir(tmp: Path) -> Path:
    return cache_dir(tmp / "cache", count=3)


def _rows(cache: Path) -> list:
    return index_part(cache).read_text().splitlines()


def _write_rows(cache: Path, rows: list) -> None:
    index_part(cache).write_text("".join(r + "\n" for r in rows))


def _replace_row(cache: Path, number: int, old: str, new: str) -> Path:
    rows = _rows(cache)
    assert old in rows[number], rows[number]
    rows[number] = rows[number].replace(old, new, 1)
    _write_rows(cache, rows)
    return cache


def _manifest(tmp: Path, text: str) -> Path:
    cache = _dir(tmp)
    (cache / "cache.json").write_text(text)
    return cache


def _meta_json(tmp: Path, meta_json: str, vid: str = '"clips/a.mp4"') -> Path:
    path = _single(tmp)
    edit_videos(path, lambda table: '{"v0": {"id": %s, "meta": %s}}' % (vid, meta_json))
    return path


def _tensor(tmp: Path, name: str, tensor) -> Path:
    """A single file whose tensor ``name`` is replaced (written by hand: the writer refuses it)."""
    from safetensors.torch import save_file

    path = _single(tmp)
    header = json.loads(split_file(path)[0])
    tensors = {n: t for n, t in video_tensors(0).items()}
    tensors[name] = tensor
    save_file({f"v0.{n}": t.contiguous() for n, t in tensors.items()}, str(path), metadata=header["__metadata__"])
    return path


def _shard_header(tmp: Path, edit) -> Path:
    cache = _dir(tmp)
    edit_header(shards_of(cache)[0], edit)
    return cache


def _nested_in_row_meta(tmp: Path) -> Path:
    cache = _dir(tmp)
    rows = _rows(cache)
    row = json.loads(rows[0])
    row["meta"] = "PLACEHOLDER"
    rows[0] = json.dumps(row).replace('"PLACEHOLDER"', nested(kind="object"))
    _write_rows(cache, rows)
    return cache


# name → (builder, expectation): "refused" (CacheError on open), "bad:<id>" (that video raises
# CacheError, the others read), "noted" (everything listed reads, TokenCache.problems() says what
# was skipped), "ok" (reads)
CASES: Dict[str, Tuple[Callable[[Path], Path], str]] = {
    # deep nesting
    "nest/manifest-list": (lambda t: _manifest(t, '{"kind": "aot-token-cache", "format_version": 1, "x": %s}'
                                               % nested()), "refused"),
    "nest/manifest-object": (lambda t: _manifest(t, nested(kind="object")), "refused"),
    "nest/header-top-level": (lambda t: (lambda p: (edit_header(p, lambda h: json.dumps(h)[:-1] + ', "x": '
                                                                + nested() + "}"), p)[1])(_single(t)), "refused"),
    "nest/header-metadata": (lambda t: (lambda p: (edit_header(p, lambda h: json.dumps(
        {**h, "__metadata__": "P"}).replace('"P"', nested(kind="object"))), p)[1])(_single(t)), "refused"),
    "nest/video-table": (lambda t: (lambda p: (edit_videos(p, lambda v: nested()), p)[1])(_single(t)), "refused"),
    "nest/meta": (lambda t: _meta_json(t, nested(kind="object")), "refused"),
    "nest/meta-in-a-shard": (lambda t: _shard_header(t, lambda h: h["__metadata__"].update(
        aot_videos=h["__metadata__"]["aot_videos"].replace('"meta":{', '"meta":{"deep":' + nested() + ",", 1))),
        "bad:clips/c0.mp4"),
    "nest/index-row-meta": (_nested_in_row_meta, "noted"),
    "nest/index-line-bare": (lambda t: (lambda c: (_write_rows(c, _rows(c) + [nested()]), c)[1])(_dir(t)), "noted"),
    "nest/index-row-id": (lambda t: _replace_row(_dir(t), 1, '"id": "clips/c1.mp4"', '"id": ' + nested()), "noted"),
    "nest/shallow-enough": (lambda t: _meta_json(t, '{"x": %s}' % nested(60)), "ok"),
    # non-finite and huge numbers
    "num/manifest-infinity": (lambda t: _manifest(t, '{"kind": "aot-token-cache", "format_version": Infinity}'),
                              "refused"),
    "num/manifest-nan": (lambda t: _manifest(t, '{"kind": "aot-token-cache", "format_version": NaN}'), "refused"),
    "num/manifest-1e999": (lambda t: _manifest(t, '{"kind": "aot-token-cache", "format_version": 1e999}'),
                           "refused"),
    "num/manifest-10^5000": (lambda t: _manifest(t, '{"kind": "aot-token-cache", "format_version": 1%s}'
                                                 % ("0" * 5000)), "refused"),
    "num/manifest-string-version": (lambda t: _manifest(t, '{"kind": "aot-token-cache", "format_version": "x"}'),
                                    "refused"),
    "num/aot-format-infinity": (lambda t: (lambda p: (edit_header(p, lambda h: h["__metadata__"].update(
        aot_format="Infinity")), p)[1])(_single(t)), "refused"),
    "num/meta-nan": (lambda t: _meta_json(t, '{"counts": {"ratio": NaN}}'), "refused"),
    "num/meta--infinity": (lambda t: _meta_json(t, '{"counts": {"frames": -Infinity}}'), "refused"),
    "num/tensor-shape-10^30": (lambda t: (lambda p: (edit_header(p, lambda h: h["v0.kind"].update(
        shape=[10 ** 30])), p)[1])(_single(t)), "bad:clips/a.mp4"),
    "num/row-committed-at-1e400": (lambda t: _replace_row(_dir(t), 0, '"committed_at": "', '"committed_at": 1e400, "x": "'),
                                   "noted"),
    # wrong types
    "type/meta-string": (lambda t: _meta_json(t, '"a string"'), "bad:clips/a.mp4"),
    "type/meta-list": (lambda t: _meta_json(t, "[1, 2]"), "bad:clips/a.mp4"),
    "type/meta-number": (lambda t: _meta_json(t, "12"), "bad:clips/a.mp4"),
    "type/meta-true": (lambda t: _meta_json(t, "true"), "bad:clips/a.mp4"),
    "type/id-number": (lambda t: _meta_json(t, "{}", vid="7"), "noted"),
    "type/video-table-list": (lambda t: (lambda p: (edit_videos(p, lambda v: "[1]"), p)[1])(_single(t)), "refused"),
    "type/metadata-string": (lambda t: (lambda p: (edit_header(p, lambda h: h.update(__metadata__="x")), p)[1])(
        _single(t)), "refused"),
    "type/tensor-entry-list": (lambda t: (lambda p: (edit_header(p, lambda h: h.update({"v0.kind": [1]})), p)[1])(
        _single(t)), "bad:clips/a.mp4"),
    "type/dtype-number": (lambda t: (lambda p: (edit_header(p, lambda h: h["v0.kind"].update(dtype=8)), p)[1])(
        _single(t)), "bad:clips/a.mp4"),
    "type/offsets-floats": (lambda t: (lambda p: (edit_header(p, lambda h: h["v0.kind"].update(
        data_offsets=[0.0, 40.0])), p)[1])(_single(t)), "bad:clips/a.mp4"),
    "type/row-status-list": (lambda t: _replace_row(_dir(t), 1, '"status": "ok"', '"status": ["ok"]'), "noted"),
    "type/row-key-number": (lambda t: _replace_row(_dir(t), 1, '"key": "v0"', '"key": 0'), "noted"),
    "type/row-shard-escapes": (lambda t: _replace_row(_dir(t), 1, '"shard": "shards/', '"shard": "../../'), "noted"),
    "type/row-shard-nul": (lambda t: _replace_row(_dir(t), 1, '"shard": "shards/', '"shard": "shards/\\u0000'), "noted"),
    "shape/segments-1d": (lambda t: _tensor(t, "segments", torch.tensor([0, 4, 4, 4], dtype=torch.int32)), "bad:clips/a.mp4"),
    "shape/per-frame-lengths": (lambda t: _tensor(t, "timestamps", torch.zeros(9, dtype=torch.float64)), "bad:clips/a.mp4"),
    "shape/kind-float": (lambda t: _tensor(t, "kind", torch.zeros(40)), "bad:clips/a.mp4"),
    "shape/tokens-3d": (lambda t: _tensor(t, "tokens", torch.zeros(40, 2, 8)), "bad:clips/a.mp4"),
    "shape/frame-length": (lambda t: _tensor(t, "frame", torch.zeros(39, dtype=torch.int32)), "bad:clips/a.mp4"),
    "shape/cell-mask-frames": (lambda t: _tensor(t, "cell_mask", torch.zeros(3, 25, dtype=torch.uint8)), "bad:clips/a.mp4"),
}


def _expect(out, expectation: str, path: Path) -> None:
    one_line_each(out.messages)
    if expectation == "refused":
        assert out.error is not None and out.error.startswith(str(path)), out
    elif expectation.startswith("bad:"):
        vid = expectation[4:]
        assert out.error is None and vid in out.bad and str(path) in out.bad[vid], out
        assert vid in out.bad[vid] or repr(vid) in out.bad[vid]  # names the video
        others = set(out.ids)
        assert vid not in others
    elif expectation == "noted":
        assert out.error is None and not out.bad and out.problems, out
    else:
        assert out.error is None and not out.bad and not out.problems, out


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_cache_reads_or_raises_one_cache_error(case, tmp_path):
    build, expectation = CASES[case]
    path = build(tmp_path)
    _expect(read_everything(path), expectation, path)


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if c.split("/")[0] in ("nest", "type", "shape")][::3])
def test_hostile_cache_through_inspect(case, tmp_path):
    build, expectation = CASES[case]
    path = build(tmp_path)
    code = {"refused": 2, "ok": 0}.get(expectation, 1)
    for args in ([str(path)], [str(path), "--json"]):
        check_clean_run(inspect(*args), (code,))


def test_one_bad_entry_does_not_hide_the_others(tmp_path):
    cache = cache_dir(tmp_path / "cache", count=4)
    rows = _rows(cache)
    edit_videos(shards_of(cache)[1], lambda table: json.dumps(
        {k: {**v, "meta": "broken"} for k, v in table.items()}))  # the second video's meta
    rows.insert(2, "{torn")
    _write_rows(cache, rows)
    (cache / "shards" / json.loads(rows[3])["shard"].split("/")[1]).unlink()  # the third video's shard
    result = inspect(str(cache))
    err = check_clean_run(result, (1,))
    assert "clips/c0.mp4" in result.stdout and "clips/c3.mp4" in result.stdout
    assert len(err) == 1 and "1 of 3 video(s) could not be read" in err[0]
    assert "1 index row(s) skipped" in err[0] and "1 shard(s) named by the index missing" in err[0]
    unreadable = [line for line in result.stdout.splitlines() if line.startswith("unreadable:")]
    assert len(unreadable) == 1 and "clips/c1.mp4" in unreadable[0] and "meta is a string" in unreadable[0]
    stats = json.loads(inspect(str(cache), "--json").stdout)
    assert [v["id"] for v in stats["videos"]] == ["clips/c0.mp4", "clips/c3.mp4"]
    assert [u["id"] for u in stats["unreadable"]] == ["clips/c1.mp4"]
    assert stats["skipped_rows"] == 1 and "line 3" in stats["skipped_row_reasons"][0]
    assert len(stats["missing_shards"]) == 1 and stats["totals"]["unreadable"] == 1
    one = inspect(str(cache), "--video", "clips/c1.mp4")  # the bad one asked for by name
    assert one.exit_code == 1 and "meta is a string" in one.stderr and len(one.stderr.splitlines()) == 1
    one = inspect(str(cache), "--video", "clips/c1.mp4", "--json")
    assert one.exit_code == 1 and json.loads(one.stdout)["unreadable"][0]["id"] == "clips/c1.mp4"


# -- ids and other printed text with terminal escape sequences --------------------------------------

ESCAPING_IDS = ["a\x1b[2Jb", "\x1b]8;;http://example.invalid\x07link\x1b]8;;\x07", "c1\x9b31m", "bell\x07",
                "abc\u202edcba.mp4", "line\nbreak", "cr\rOVER", "nul\x00del\x7f", "tab\tsep",
                "[bold red]markup[/] [/]", "zero\u200bwidth"]


def test_escape_sequences_in_ids_model_names_and_failures_are_printed_escaped(tmp_path):
    from aot_cli.cache import CacheWriter

    with CacheWriter(tmp_path / "cache", shard_size=1) as writer:
        for k, vid in enumerate(ESCAPING_IDS):
            meta = video_meta(k)
            meta["model"]["model"] = f"model\x1b[31m{k}"
            writer.add(vid, video_tensors(k), meta)
        writer.add_failure("fail\x1b[2J.mp4", "/x\x1b]0;title\x07.mp4", "decode\x1b[31m", "bad\rX")
    result = inspect(str(tmp_path / "cache"))
    check_clean_run(result, (0,))
    assert "a\\x1b[2Jb" in result.stdout and "abc\\u202edcba.mp4" in result.stdout
    assert "[bold red]markup[/]" in result.stdout  # shown as text, not taken as markup
    stats = json.loads(inspect(str(tmp_path / "cache"), "--json").stdout)
    assert sorted(v["id"] for v in stats["videos"]) == sorted(ESCAPING_IDS)
    missing = inspect(str(tmp_path / "cache"), "--video", "no\x1b[2Jsuch")
    assert missing.exit_code == 2 and "\x1b" not in missing.stderr and "no\\x1b[2Jsuch" in missing.stderr


# -- FIFOs, links, huge files -----------------------------------------------------------------------

def test_fifos_are_refused_without_blocking(tmp_path):
    cache = _dir(tmp_path)
    make_fifo(cache / "index" / "r1.jsonl")
    out = read_everything(cache)
    assert len(out.ids) == 3 and any("a FIFO" in p for p in out.problems)
    fifo_file = make_fifo(tmp_path / "fifo.safetensors")
    assert "not a regular file" in read_everything(fifo_file).error
    shard = shards_of(cache)[0]
    make_fifo(shard)
    out = read_everything(cache)
    assert len(out.ids) == 2 and any("a FIFO" in p for p in out.problems)
    make_fifo(cache / "cache.json")
    assert "a FIFO" in read_everything(cache).error
    check_clean_run(inspect(str(fifo_file)), (2,))
    check_clean_run(inspect(str(cache)), (2,))


def test_links_inside_a_cache_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside_cache = cache_dir(outside / "cache", count=2)
    secret = single_file(outside / "secret.safetensors", "SECRET")
    cache = _dir(tmp_path)
    shard = shards_of(cache)[0]
    shard.unlink()
    shard.symlink_to(secret)
    (cache / "index" / "r9.jsonl").symlink_to(index_part(outside_cache))
    out = read_everything(cache)
    assert "SECRET" not in out.ids and len(out.ids) == 2
    assert sum("a symbolic link" in p for p in out.problems) == 2
    for name, target in (("shards", outside_cache / "shards"), ("index", outside_cache / "index"),
                         ("cache.json", outside_cache / "cache.json")):
        linked = _dir(tmp_path / name)
        shutil.rmtree(linked / name) if (linked / name).is_dir() else (linked / name).unlink()
        (linked / name).symlink_to(target)
        out = read_everything(linked)
        assert out.error and "a symbolic link" in out.error and str(linked / name) in out.error
    # the cache directory itself may be a link (the user names it)
    (tmp_path / "via-link").symlink_to(cache)
    assert len(read_everything(tmp_path / "via-link").ids) == 2


def test_huge_and_endless_files_give_a_cache_error(tmp_path):
    cache = _dir(tmp_path)
    with open(cache / "cache.json", "r+b") as f:
        f.truncate(1 << 31)  # sparse: 2 GiB of zeros
    assert "more than the 1048576 bytes" in read_everything(cache).error
    cache = _dir(tmp_path / "b")
    with open(cache / "index" / "r1.jsonl", "wb") as f:
        f.truncate(3 << 30)
    assert "TokenCache(max_index_bytes" in read_everything(cache).error
    with open(cache / "index" / "r1.jsonl", "wb") as f:  # one endless line, under the total limit
        f.write(b'{"id": "x", "status": "ok", "meta": "')
        f.truncate(40 << 20)
    out = read_everything(cache)
    assert len(out.ids) == 3 and "longer than" in out.problems[0]
    (cache / "index" / "r1.jsonl").unlink()
    (cache / "index" / "r1.jsonl").symlink_to("/dev/zero")
    assert len(read_everything(cache).ids) == 3


SIGBUS_CHILD = """
import os, sys
from aot_cli.cache import CacheError, TokenCache
cache = TokenCache(sys.argv[1])
videos = [cache[vid] for vid in cache.ids()]
for shard in os.listdir(os.path.join(sys.argv[1], "shards")):
    os.truncate(os.path.join(sys.argv[1], "shards", shard), int(sys.argv[2]))
errors = 0
for video in videos:
    try:
        video.tokens
        video.array("kind")
    except CacheError as exc:
        errors += 1
        assert "truncated or changed while being read" in str(exc), exc
print("errors", errors)
"""


@pytest.mark.parametrize("cut", [0, 300])
def test_a_shard_cut_short_while_it_is_read_gives_cache_errors_not_sigbus(tmp_path, cut):
    cache = cache_dir(tmp_path / "cache", count=3)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SIGBUS_CHILD), str(cache), str(cut)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)  # -7 would be SIGBUS
    assert proc.stdout.split() == ["errors", "3"]


# -- torch is not needed to read a cache -------------------------------------------------------------

NO_TORCH_CHILD = """
import importlib.util, json, sys, types
from pathlib import Path
package = types.ModuleType("aot_cli")  # the package without its __init__ (which imports the pipeline)
package.__path__ = [str(Path(sys.argv[2]) / "aot_cli")]
sys.modules["aot_cli"] = package
from aot_cli.cache import TokenCache
from aot_cli.inspect.stats import cache_stats
stats = cache_stats(TokenCache(sys.argv[1]))
print(json.dumps({"videos": len(stats["videos"]), "tokens": stats["totals"]["tokens"],
                  "dtype": stats["videos"][0]["dtype"], "torch": "torch" in sys.modules,
                  "transformers": "transformers" in sys.modules}))
"""


def test_the_reader_and_inspect_statistics_do_not_import_torch(tmp_path):
    cache = cache_dir(tmp_path / "cache", count=2)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(NO_TORCH_CHILD), str(cache), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    want = TokenCache(cache)
    assert got == {"videos": 2, "tokens": sum(int((want[v].kind != 3).sum()) for v in want.ids()),
                   "dtype": "bfloat16", "torch": False, "transformers": False}


def test_aot_inspect_json_does_not_import_torch(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import sys, aot_cli.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert probe.stdout.strip() == "False", probe.stderr  # the CLI module itself is light
    path = single_file(tmp_path / "one.safetensors")
    code = ("import sys, runpy; sys.argv = ['aot', 'inspect', sys.argv[1], '--json']\n"
            "try:\n    runpy.run_module('aot_cli.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["videos"] == 1
    assert proc.stderr.split()[-2:] == ["False", "False"]


def test_floods_of_blank_or_bad_index_lines_end_in_a_cache_error(tmp_path):
    from aot_cli.cache import index

    cache = _dir(tmp_path)
    (cache / "index" / "r5.jsonl").write_bytes(b"\n" * (index.MAX_INDEX_LINES + 10))
    assert "more than 4000000 lines" in read_everything(cache).error
    (cache / "index" / "r5.jsonl").write_bytes(b"{}\n" * (index.MAX_SKIPPED_LINES + 10))
    assert "lines that are not rows" in read_everything(cache).error
    (cache / "index" / "r5.jsonl").write_bytes(b"{}\n" * 1000)  # a few bad lines are only counted
    out = read_everything(cache)
    assert len(out.ids) == 3 and "skipped 1000 index row(s)" in out.problems[0]


def test_a_damaged_shard_named_by_many_rows_is_read_once(tmp_path, monkeypatch):
    from aot_cli.cache.reader import ShardFile

    cache = cache_dir(tmp_path / "cache", count=4)
    rows = _rows(cache)
    first = json.loads(rows[0])["shard"]
    _write_rows(cache, [json.dumps({**json.loads(r), "shard": first, "key": "v0"}) for r in rows[:4]])
    edit_videos(cache / first, lambda table: nested())
    opened = []
    real = ShardFile.open_in_cache.__func__
    monkeypatch.setattr(ShardFile, "open_in_cache",
                        classmethod(lambda cls, d, n, offset=0: opened.append(n) or real(cls, d, n, offset)))
    out = read_everything(cache)
    assert len(out.bad) == 4 and opened == [first.split("/")[1]]
