"""The provenance file of an evaluation from a cache, written beside lmms-eval's results.

lmms-eval writes ``<output_path>/<model dir>/<time>_results.json`` (``<model dir>`` is its
sanitised ``pretrained``, ``<time>`` its ``YYYYMMDD_HHMMSS`` stamp in ``--timezone``). The aot
models write ``<output_path>/<model dir>/<time>_aot_provenance.json`` next to it (``<time>``: when
the aot model was created, in the same clock, so the same second as the results' stamp or one or
two later; ``_rank<r>`` is added under ``accelerate launch`` with several processes), or the file
given as ``provenance=FILE`` in ``--model_args``. It is rewritten atomically after every batch of
requests, so it always describes what was evaluated so far:

- ``aot_version``, ``lmms_eval_version``; ``lmms_eval``: model name, ``model_args``, ``tasks``, the
  results directory, rank and world size;
- ``checkpoint``: ``pretrained``, ``revision``, ``model_type``, the transformers class, dtype,
  device and identity (the hub repository and commit; for a local directory the number of files
  and one sha256 over ``aot_cli.models.source.checkpoint_identity``'s hashes of its configs and
  weight-file ends);
- ``cache``: its path, the number of cached videos the requests read and the ids compressed
  during the run;
- ``config_fingerprints`` and ``configurations``: per configuration fingerprint of the videos read,
  the number of videos, profile, method, requested and achieved ratios, preset, frame counts,
  decoders with their read mode, the checkpoint that made them, the aot versions and the whole
  ``meta["config"]``;
- ``requests``: counts per request type and the mean number of video tokens per request.

Only lmms-eval's command line tells where its results go: when this process is lmms-eval's CLI
(``python -m lmms_eval`` or ``lmms-eval``), ``--output_path``, ``--model_args``, ``--tasks`` and
``--timezone`` are read from it with lmms-eval's own precedence (the command line over a
``--config`` file's entry for this model).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

SUFFIX = "_aot_provenance.json"
KIND = "aot-evaluation-provenance"


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution (None when it is not installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class CliRun:
    """What the running lmms-eval command line says about this evaluation."""

    output_path: Optional[str]
    model_args: Optional[str]
    tasks: Optional[str]
    timezone: Optional[str]


def _is_lmms_eval_cli() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("lmms_eval.__main__", "lmms_eval"):
        return True
    return bool(sys.argv) and Path(sys.argv[0]).name == "lmms-eval"


def _config_entry(path: str, model: str) -> Mapping[str, Any]:
    """The one entry of an lmms-eval ``--config`` YAML that runs ``model`` ({} when there is none,
    several that disagree, or the file cannot be read)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return {}
    entries = [e for e in (loaded if isinstance(loaded, list) else [loaded]) if isinstance(e, Mapping)]
    mine = [e for e in entries if e.get("model") in (None, model)]
    distinct = {json.dumps([e.get("output_path"), e.get("model_args"), e.get("tasks")], default=str) for e in mine}
    return mine[0] if len(distinct) == 1 else {}


def lmms_eval_cli(model: str, argv: Optional[List[str]] = None) -> Optional[CliRun]:
    """The evaluation's ``--output_path``, ``--model_args``, ``--tasks`` and ``--timezone`` when this
    process is lmms-eval's CLI (``argv``: its arguments, default ``sys.argv[1:]``), else None."""
    if argv is None:
        if not _is_lmms_eval_cli():
            return None
        argv = sys.argv[1:]
    parser = argparse.ArgumentParser(add_help=False)  # the few options of lmms-eval's parser read here
    for option in ("--config", "--model", "--model_args", "--tasks", "--output_path", "--timezone"):
        parser.add_argument(option, default=None)
    try:
        args, _ = parser.parse_known_args(argv)
    except SystemExit:
        return None
    entry = _config_entry(args.config, model) if args.config else {}

    def value(name: str) -> Optional[str]:
        given = getattr(args, name)
        chosen = given if given is not None else entry.get(name)
        return None if chosen is None else str(chosen)

    return CliRun(value("output_path"), value("model_args"), value("tasks"), value("timezone"))


def results_dir(run: CliRun, pretrained: str) -> Optional[Path]:
    """The directory lmms-eval writes this run's results to (None without ``--output_path``)."""
    if not run.output_path:
        return None
    from lmms_eval.loggers.evaluation_tracker import GeneralConfigTracker
    from lmms_eval.utils import sanitize_model_name

    name = GeneralConfigTracker._get_model_name(run.model_args) if run.model_args else pretrained
    return Path(run.output_path) / sanitize_model_name(name or pretrained)


def timestamp(timezone: Optional[str]) -> str:
    """Now as lmms-eval stamps its result files (``YYYYMMDD_HHMMSS`` in ``timezone``, lmms-eval's
    default when None)."""
    from lmms_eval.utils import get_datetime_str

    try:
        stamp = get_datetime_str(timezone=timezone) if timezone else get_datetime_str()
    except Exception:  # noqa: BLE001 - an unknown time zone: lmms-eval itself fails on it later
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    return stamp.replace(":", "-")


def _section(meta: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = meta.get(name)
    return value if isinstance(value, Mapping) else {}


def configurations(metas: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The videos' metas grouped by configuration fingerprint, in first-seen order: per group the
    number of videos, profile, method, requested ratio (None for ``--method none``), preset, frame
    counts, achieved ratios, decoders (with read mode), the checkpoint that made them, aot versions
    and the first video's whole ``meta["config"]``."""
    groups: Dict[str, Dict[str, Any]] = {}
    for meta in metas:
        fingerprint = str(meta.get("config_fingerprint"))
        config = _section(meta, "config")
        method, decode = _section(config, "method"), _section(config, "decode")
        sampling, model = _section(meta, "sampling"), _section(meta, "model")
        group = groups.get(fingerprint)
        if group is None:
            group = groups[fingerprint] = {
                "config_fingerprint": fingerprint, "videos": 0, "profile": _section(meta, "profile").get("name"),
                "method": method.get("method"), "ratio": method.get("ratio"), "preset": method.get("preset"),
                "requested_frames": decode.get("frames"), "fps": decode.get("fps"),
                "requested_decoder": decode.get("decoder"), "frames": [], "achieved_ratios": [], "decoders": [],
                "made_with": [], "aot_versions": [], "config": dict(config)}
        group["videos"] += 1
        read = f"{sampling.get('decoder')} ({sampling.get('read')})" if sampling.get("read") else sampling.get("decoder")
        made = {"model": model.get("model"), "commit": model.get("commit")}
        achieved = _section(meta, "counts").get("ratio")
        achieved = round(achieved, 6) if isinstance(achieved, (int, float)) else None
        for key, item in (("frames", sampling.get("frames")), ("achieved_ratios", achieved), ("decoders", read),
                          ("made_with", made),
                          ("aot_versions", _section(meta, "versions").get("aot"))):
            if item is not None and item not in group[key]:
                group[key].append(item)
    return list(groups.values())


class ProvenanceFile:
    """The provenance of one evaluation: fixed facts (``static``) plus the cached videos read so
    far, written atomically to ``path`` by :meth:`write`."""

    def __init__(self, path: Path, static: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.static = dict(static)
        self.video_ids: Dict[str, None] = {}
        self.requests: Dict[str, int] = {}
        self.video_tokens = 0

    def add(self, request_type: str, video_id: Optional[str], video_tokens: int) -> None:
        """One answered request (``video_id`` None: a text-only document)."""
        self.requests[request_type] = self.requests.get(request_type, 0) + 1
        self.video_tokens += int(video_tokens)
        if video_id is not None:
            self.video_ids.setdefault(video_id, None)

    def content(self, cache: Any, compressed: Iterable[str] = ()) -> Dict[str, Any]:
        """The JSON document (``cache``: the opened :class:`~aot_cli.cache.TokenCache`, for the
        metas; ``compressed``: ids compressed into it during the run)."""
        metas = [cache[vid].meta for vid in self.video_ids] if cache is not None else []
        groups = configurations(metas)
        total = sum(self.requests.values())
        document = {"kind": KIND, "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    **self.static}
        document["cache"] = {**dict(self.static.get("cache") or {}), "videos_read": len(self.video_ids),
                             "compressed_during_run": list(compressed)}
        document["config_fingerprints"] = [g["config_fingerprint"] for g in groups]
        document["configurations"] = groups
        document["requests"] = {**self.requests, "video_tokens_mean": round(self.video_tokens / total, 3) if total else 0}
        return document

    def write(self, cache: Any, compressed: Iterable[str] = ()) -> Path:
        """Write :meth:`content` atomically (creating the directory). Raises CacheError."""
        from aot_cli.cache import CacheError, atomic_write_bytes

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"{self.path.parent}: cannot create the directory ({exc.strerror or exc})") from None
        text = json.dumps(self.content(cache, compressed), indent=1, default=str) + "\n"
        return atomic_write_bytes(self.path, text.encode("utf-8"))
