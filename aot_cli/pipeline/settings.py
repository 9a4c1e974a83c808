"""The one validation step every command runs before it loads a model, decodes a frame, starts a
process or creates a file: flags and config file together become a checked :class:`RunConfig`.

Order: defaults < config file < flags. Config-file keys are the flag names (``frames``,
``decode-timeout`` or ``decode_timeout``, ``anchors``, ...), also at the top level of the file,
and the dataclass field names recorded in a cache's ``meta["config"]`` (``num_anchors``,
``sinkhorn_max_iter``, ``timeout``, ...), so a cache's configuration can be fed back. The
mapping comes from :data:`~aot_cli.pipeline.cli_support.FLAG_FIELDS` and the dataclass fields, so
a flag or field added there is a valid key without further work.

Every value is type-checked against its dataclass field, then each configuration class runs its
own checks (``check_decode_config``, ``AOTConfig.validate``, ``ModelConfig.validate``,
``StorageConfig.validate``) plus the range checks below that those do not make yet. Errors are
:class:`UsageError`: one line ``<flag or file>: <cause>``, where field names in the checks'
messages are replaced by the flag or config key the user wrote.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config import DecodeConfig, ModelConfig, StorageConfig, parse_size, read_config_file
from ..core import AOTConfig

SECTIONS: Dict[str, type] = {"decode": DecodeConfig, "model": ModelConfig, "method": AOTConfig,
                             "storage": StorageConfig}

#: Flags whose value is translated before it lands in its field.
FLAG_VALUES: Dict[str, Callable[[Any], Any]] = {
    "no_inter": lambda v: not v,
    "pooling": lambda v: None if v == "none" else v,
}
#: Seconds a finished video may wait before it is committed when ``--flush-every`` is not given.
DEFAULT_FLUSH_EVERY = 5.0


class UsageError(ValueError):
    """A bad flag, config file or combination (one line: ``<flag or file>: <cause>``); exit 2."""


def _flag_fields() -> Dict[str, Tuple[str, str]]:
    from .cli_support import FLAG_FIELDS

    return FLAG_FIELDS


def dashed(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_keys() -> Dict[str, Dict[str, Tuple[str, str]]]:
    """section -> {accepted key: (field, flag or "")}: every flag of the section (underscored
    and dashed) and every field name of its dataclass."""
    keys: Dict[str, Dict[str, Tuple[str, str]]] = {s: {} for s in SECTIONS}
    for flag, (section, name) in _flag_fields().items():
        keys[section][flag] = (name, flag)
        keys[section][flag.replace("_", "-")] = (name, flag)
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            keys[section].setdefault(f.name, (f.name, ""))
            keys[section].setdefault(f.name.replace("_", "-"), (f.name, ""))
    return keys


def flag_for(section: str, name: str) -> Optional[str]:
    """The flag that sets field ``section.name`` (underscored), if any."""
    for flag, (sec, fld) in _flag_fields().items():
        if (sec, fld) == (section, name) and flag not in FLAG_VALUES:
            return flag
    return None


def _valid_keys(section: str) -> str:
    """The keys to show for ``section``: flag names first, then fields without a flag."""
    flags = [f.replace("_", "-") for f, (s, _) in _flag_fields().items() if s == section]
    covered = {fld for f, (s, fld) in _flag_fields().items() if s == section}
    others = [f.name for f in dataclasses.fields(SECTIONS[section]) if f.name not in covered]
    return ", ".join(flags + others)


@dataclass
class Origin:
    """Where a field's value came from: ``flag`` ("--frames") or a config ``file`` and the
    ``key`` written there."""

    flag: Optional[str] = None
    file: Optional[str] = None
    section: Optional[str] = None
    key: Optional[str] = None

    def subject(self) -> str:
        if self.flag:
            return self.flag
        return f"{self.file}: [{self.section}] {self.key}"

    def name(self) -> str:
        return self.flag or self.key or ""


@dataclass
class RunSettings:
    """What the validation step returns: the run configuration, run options (decode workers:
    None = automatic; flush interval in seconds) and where each set field came from."""

    cfg: Any  # RunConfig (imported lazily: .run pulls the method and tensors in)
    decode_workers: Optional[int] = None
    flush_every: float = DEFAULT_FLUSH_EVERY
    origins: Dict[Tuple[str, str], Origin] = field(default_factory=dict)
    config_file: Optional[str] = None

    def explain(self, section: str, exc: BaseException) -> UsageError:
        return explain(str(exc), section, self.origins, self.config_file)


# ----------------------------------------------------------------------------- reading values

def _file_sections(path: str) -> Dict[str, Dict[str, Tuple[str, Any]]]:
    """The config file as section -> {field: (key as written, value)}; UsageError for unknown
    sections or keys (naming the file, the section and the valid keys)."""
    try:
        data = read_config_file(path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return _sections_of(data, path)


def _sections_of(data: Dict[str, Any], path: str) -> Dict[str, Dict[str, Tuple[str, Any]]]:
    """A parsed configuration (a config file's content, or a cache's recorded ``meta["config"]``)
    as section -> {field: (key as written, value)}; ``path`` names it in errors."""
    if "config" in data and isinstance(data["config"], dict) and len(data) == 1:
        data = data["config"]  # a cache's recorded meta["config"] fed back
    keys = config_keys()
    out: Dict[str, Dict[str, Tuple[str, Any]]] = {s: {} for s in SECTIONS}

    def put(section: str, key: str, value: Any) -> None:
        name, _ = keys[section][key]
        if name in out[section] and out[section][name][0] != key:
            raise UsageError(f"{path}: [{section}] {key} and {out[section][name][0]} set the same option")
        out[section][name] = (key, value)

    for top, value in data.items():
        if top in SECTIONS and isinstance(value, dict):
            for key, v in value.items():
                if key not in keys[top]:
                    raise UsageError(f"{path}: [{top}] unknown key {str(key)!r} (valid keys: {_valid_keys(top)})")
                put(top, key, v)
            continue
        homes = [s for s in SECTIONS if top in keys[s]]
        if len(homes) != 1:
            flags = ", ".join(f.replace("_", "-") for f in _flag_fields())
            raise UsageError(f"{path}: unknown key {str(top)!r} (valid: the sections {', '.join(SECTIONS)} "
                             f"or any option: {flags})")
        put(homes[0], top, value)
    return out


def _hints(cls: type) -> Dict[str, Any]:
    import sys

    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, vars(module))


def _check_type(value: Any, hint: Any) -> Tuple[bool, Any]:
    """(ok, value converted) for a config-file value against a field annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, converted = _check_type(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        items = list(value)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(items):
            return False, value
        item_hints = args if origin is tuple and args and args[-1] is not Ellipsis else [args[0] if args else Any] * len(items)
        converted = []
        for item, item_hint in zip(items, item_hints):
            ok, c = _check_type(item, item_hint)
            if not ok:
                return False, value
            converted.append(c)
        return True, tuple(converted) if origin is tuple else converted
    return True, value


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _describe(hint: Any, null_word: str = "") -> str:
    """What a field takes, in words; ``null_word`` is appended for optional fields (how the
    source writes "not set": ``" (or null)"`` in JSON; nothing for flags and TOML)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:
        words = " or ".join(_describe(a) for a in args)
        return words + null_word if type(None) in typing.get_args(hint) else words
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} values"
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    """A value as JSON and TOML write it (``true``, ``"16"``), else its repr."""
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


#: Fields whose config-file value may also be written the way the flag takes it (a string).
FIELD_PARSERS: Dict[Tuple[str, str], Callable[[Any], Any]] = {
    ("storage", "shard_size"): parse_size,
}


def _score_layers(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parts = tuple(int(x) for x in value.split(","))
        except ValueError:
            raise ValueError(f"must be two integers like 5,-2, got {value!r}") from None
        if len(parts) != 2:
            raise ValueError(f"must be two integers like 5,-2, got {value!r}")
        return parts
    return value


FIELD_PARSERS[("model", "score_layers")] = _score_layers


# ----------------------------------------------------------------------------- messages

def _mention(name: str) -> "re.Pattern[str]":
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")


def explain(message: str, section: str, origins: Dict[Tuple[str, str], Origin],
            config_file: Optional[str] = None) -> UsageError:
    """A configuration check's one-line ``message`` about ``section`` as a UsageError that names
    what the user wrote: field names become the flag (``num_anchors`` -> ``--anchors``) or the
    config key that set them, and the line starts with the first such flag or key. A message
    that already starts with a flag is kept, unless a config file set that flag's value: then the
    line starts with the file, section and key instead."""
    message = " ".join(str(message).split())
    if message.startswith("--"):
        # a check that names the flag; when a config file set that value, name the file and key
        flag, _, rest = message.partition(" ")
        target = _flag_fields().get(flag[2:].replace("-", "_"))
        origin = origins.get(target) if target else None
        if origin is not None and origin.flag is None and rest:
            return UsageError(f"{origin.subject()}: {rest}")
        return UsageError(message)
    cls = SECTIONS.get(section)
    names = [f.name for f in dataclasses.fields(cls)] if cls else []
    found: List[Tuple[int, str]] = []
    for name in names:
        m = _mention(name).search(message)
        if m:
            found.append((m.start(), name))
    found.sort()
    subject = None
    for _, name in found:
        origin = origins.get((section, name))
        if origin is not None and subject is None:
            subject = origin
    text = message
    for _, name in found:
        origin = origins.get((section, name))
        shown = origin.name() if origin is not None else None
        if shown is None:
            flag = flag_for(section, name)
            shown = dashed(flag) if flag else None
        if shown:
            text = _mention(name).sub(lambda _m, s=shown: s, text)
    if subject is None:
        if found:
            flag = flag_for(section, found[0][1])
            head = dashed(flag) if flag else (config_file or section)
        else:
            head = _mentioned_subject(text, origins) or config_file or section
        return UsageError(f"{head}: {text}")
    lead = subject.name()
    if text.startswith(lead + " ") and re.match(r"[a-z]", text[len(lead) + 1:]):
        text = text[len(lead) + 1:]
    return UsageError(f"{subject.subject()}: {text}")


def _mentioned_subject(text: str, origins: Dict[Tuple[str, str], Origin]) -> Optional[str]:
    """For a message that names flags (``"... needs --keep-ratio when --anchors is given"``): the
    first of them the user set (the flag, or the config file and key that set it), else the first
    flag named; None when it names none."""
    flags = re.findall(r"--[a-z][a-z0-9-]*", text)
    table = _flag_fields()
    for flag in flags:
        origin = origins.get(table.get(flag[2:].replace("-", "_"), ("", "")))
        if origin is not None:
            return origin.subject()
    return flags[0] if flags else None


# ----------------------------------------------------------------------------- checks

def _section_checks() -> Dict[str, List[Callable[[Any], None]]]:
    from ..video.sampling import check_decode_config

    return {
        "decode": [check_decode_config, _check_sampling],
        "model": [ModelConfig.validate],
        "method": [AOTConfig.validate],
        "storage": [StorageConfig.validate],
    }


def _settle_sampling(decode: Dict[str, Any], origins: Dict[Tuple[str, str], "Origin"], recorded: bool) -> None:
    """One sampling mode per run. A mode chosen on the command line replaces the config file's
    other one (``--frames`` drops the file's ``fps`` and ``max_frames``; ``--fps`` drops its
    ``frames``), so ``--config recorded.json --frames 32`` works whatever the recording used. In a
    recorded configuration (``config=``, a cache's ``meta["config"]``), what the run that made it
    ignored is dropped (``fps`` wins over ``frames``; ``max_frames`` applies only with ``fps``).
    Conflicts within one source are left to :func:`_check_sampling`."""
    def on_command_line(name: str) -> bool:
        origin = origins.get(("decode", name))
        return origin is not None and origin.flag is not None

    def drop(*names: str) -> None:
        for name in names:
            if not on_command_line(name):
                decode.pop(name, None)
                origins.pop(("decode", name), None)

    if decode.get("frames") is not None and on_command_line("frames") and not on_command_line("fps"):
        drop("fps", "max_frames")
    if decode.get("fps") is not None and on_command_line("fps") and not on_command_line("frames"):
        drop("frames")
    if recorded and decode.get("fps") is not None:
        drop("frames")
    elif recorded:
        drop("max_frames")


def _check_sampling(cfg: DecodeConfig) -> None:
    """Sampling settings that would be silently ignored together (the library lets ``fps`` win)."""
    if cfg.fps is not None and cfg.frames is not None:
        raise ValueError("--frames cannot be combined with --fps (a fixed count, or a rate capped by --max-frames); "
                         "give one")
    if cfg.max_frames is not None and cfg.fps is None:
        raise ValueError("--max-frames caps --fps sampling; give --fps too (or --frames for a fixed count)")


def _run_options(flags: Dict[str, Any]) -> Tuple[Optional[int], float]:
    workers = flags.get("decode_workers")
    flush_every = flags.get("flush_every")
    if workers is not None and workers < 0:
        raise UsageError(f"--decode-workers: must be >= 0, got {workers}")
    flush_every = DEFAULT_FLUSH_EVERY if flush_every is None else flush_every
    if not (math.isfinite(flush_every) and flush_every >= 0):
        raise UsageError(f"--flush-every: must be >= 0 seconds, got {flush_every:g}")
    return workers, float(flush_every)


# ----------------------------------------------------------------------------- the step

def build_settings(config_file: Optional[str], flags: Dict[str, Any], *,
                   config: Optional[Dict[str, Any]] = None) -> RunSettings:
    """Flags (click's parsed values; None = not given) over the config file ``config_file``
    (or, instead, an already parsed ``config`` such as a cache's recorded ``meta["config"]``,
    named ``config_file`` in errors) over defaults, type-checked and validated. Raises
    :class:`UsageError` (one line). Reads only the config file; imports no model code."""
    from .runconfig import RunConfig

    flag_fields = _flag_fields()
    origins: Dict[Tuple[str, str], Origin] = {}
    values: Dict[str, Dict[str, Any]] = {s: {} for s in SECTIONS}
    if config is not None or config_file is not None:
        where = config_file or "recorded configuration"
        parsed = _sections_of(dict(config), where) if config is not None else _file_sections(config_file)
        for section, entries in parsed.items():
            for name, (key, value) in entries.items():
                values[section][name] = value
                origins[(section, name)] = Origin(file=where, section=section, key=key)
    for flag, value in flags.items():
        if flag not in flag_fields or value is None:
            continue
        if flag == "pooling" and value == "auto":
            continue
        section, name = flag_fields[flag]
        values[section][name] = FLAG_VALUES[flag](value) if flag in FLAG_VALUES else value
        origins[(section, name)] = Origin(flag=dashed(flag))
    _settle_sampling(values["decode"], origins, recorded=config is not None)
    workers, flush_every = _run_options(flags)

    def fail(section: str, exc: BaseException) -> UsageError:
        return explain(str(exc), section, origins, config_file)

    # values as the fields want them: parse flag-style strings, check types
    for section, cls in SECTIONS.items():
        hints = _hints(cls)
        for name, value in list(values[section].items()):
            origin = origins[(section, name)]
            parser = FIELD_PARSERS.get((section, name))
            try:
                if parser is not None:
                    value = parser(value)
            except ValueError as e:
                raise UsageError(f"{origin.subject()}: {e}") from None
            ok, value = _check_type(value, hints.get(name, Any))
            if not ok:
                null_word = " (or null)" if not origin.flag and str(origin.file).lower().endswith(".json") else ""
                raise UsageError(f"{origin.subject()}: expected {_describe(hints[name], null_word)}, "
                                 f"got {_shown(values[section][name])}")
            values[section][name] = value

    method = values["method"]
    profile_name = values["model"].get("profile")
    if isinstance(profile_name, str) and profile_name.startswith("qwen") and method.get("pooling") is not None:
        subject = origins[("method", "pooling")].subject()
        raise UsageError(f"{subject}: {profile_name} tokens are already the model's own 2x2-merged cells; pooling "
                         f"them again would break the merged grid the LLM's positions follow (use --pooling none)")
    auto_pooling = "pooling" not in method
    auto_clip = "clip_length" not in method
    auto_keyframe = "keyframe_once" not in method
    explicit = method.get("num_anchors") is not None or method.get("keep_ratio") is not None
    if method.get("method") == "none":
        if method.get("ratio") not in (None, 1.0) or explicit:
            subject = origins[("method", "method")].subject()
            raise UsageError(f"{subject}: 'none' keeps every token; drop --ratio/--anchors/--keep-ratio "
                             "or pass --ratio 1.0")
        method["ratio"] = None
    elif method.get("ratio") is None and not explicit:
        method["ratio"] = 0.1

    built = {}
    for section, cls in SECTIONS.items():
        try:
            built[section] = cls(**values[section])
        except TypeError as e:  # a field the class does not take: a bug in FLAG_FIELDS
            raise UsageError(f"{section}: {e}") from None
    checks = _section_checks()
    for section in SECTIONS:
        for check in checks[section]:
            try:
                check(built[section])
            except ValueError as e:
                raise fail(section, e) from None
    cfg = RunConfig(decode=built["decode"], model=built["model"], method=built["method"],
                    storage=built["storage"], auto_pooling=auto_pooling, auto_clip_length=auto_clip,
                    auto_keyframe_once=auto_keyframe)
    return RunSettings(cfg=cfg, decode_workers=workers, flush_every=flush_every, origins=origins,
                       config_file=config_file)


# ----------------------------------------------------------------------------- model and budget

@dataclass
class ModelPlan:
    """The model as far as it can be known without weights: the resolved ``source``, its
    ``identity`` (for the configuration fingerprint), its ``profile`` and, when the config files
    fix it, the tower ``grid``."""

    source: Any
    identity: Dict[str, Any]
    profile: Any = None
    grid: Optional[Tuple[int, int]] = None


def resolve_model(settings: RunSettings) -> ModelPlan:
    """Resolve ``--model`` (local directory, named model, Hugging Face cache, or one quick look
    at the hub), the device and the dtype, without loading weights, and read the profile and
    grid from the checkpoint's config files (read once: the identity uses the same peek). Raises
    ModelLoadError (one line)."""
    from ..models.identity import model_identity
    from ..models.peek import peek_checkpoint
    from ..models.source import resolve_source

    cfg = settings.cfg
    source = resolve_source(cfg.model.model, cfg.model.revision)
    found = peek_checkpoint(source, cfg.model)
    return ModelPlan(source=source, identity=model_identity(cfg.model, source, found), profile=found.profile,
                     grid=found.grid)


def check_profile_flags(settings: RunSettings, profile) -> None:
    """Refuse settings the model's profile cannot take, once the profile is known (from the
    checkpoint's config files, before any weight loads): the Qwen profiles' tokens are the
    model's own 2x2-merged cells, so ``--pooling`` other than none/auto would pool them again and
    break the merged-grid cells the LLM's positions follow. UsageError naming the flag."""
    if profile is None or getattr(profile, "token_order", "method") != "grid":
        return
    pooling = settings.cfg.method.pooling
    if not settings.cfg.auto_pooling and pooling is not None:
        origin = settings.origins.get(("method", "pooling"))
        subject = origin.subject() if origin else "--pooling"
        raise UsageError(f"{subject}: {profile.name} tokens are already the model's own 2x2-merged cells; "
                         f"pooling them again ({pooling}) would break the merged grid the LLM's positions follow "
                         "(use --pooling none or leave it out)")


def check_budget(settings: RunSettings, profile, grid: Optional[Tuple[int, int]]) -> None:
    """Refuse flags the profile cannot take (:func:`check_profile_flags`), and a ``--ratio`` the
    budget planner cannot meet for every video, when that depends only on the flags and the
    model: count sampling (``--frames`` or the profile's; a shorter
    video is padded to it), fixed clips, and a known tower ``grid``. Other cases (``--fps``,
    dynamic segments, grids that follow the frame size) are checked per video. UsageError
    naming ``--ratio`` (or the config key that set it)."""
    from ..core import BudgetError, fixed_segments, plan_budget
    from .runconfig import resolve_method

    cfg = settings.cfg
    check_profile_flags(settings, profile)
    if profile is None or grid is None or cfg.decode.fps is not None:
        return
    try:
        method = resolve_method(cfg, profile)
    except ValueError as e:
        raise settings.explain("method", e) from None
    if method.method == "none" or method.ratio is None or (method.inter and method.segments != "fixed"):
        return
    frames = cfg.decode.frames or profile.default_frames
    segments = fixed_segments(frames, method.clip_length) if method.inter else None
    try:
        plan_budget(method.ratio, frames, grid, method.pooling, method.stride, segments, inter=method.inter,
                    emit_keyframe=not method.keyframe_once, keep_fraction=method.keep_fraction)
    except BudgetError as e:
        origin = settings.origins.get(("method", "ratio"))
        subject = origin.subject() if origin else "--ratio"
        raise UsageError(f"{subject}: {' '.join(str(e).split())} ({frames} frames, "
                         f"{grid[0]}x{grid[1]} tower grid)") from None
