"""Which settings differ between a cached video and this run, named the way the user sets them
(``--ratio 0.1 -> 0.2``), for the refusal of a rerun whose configuration differs. Torch-free: it
compares the configuration a run would record (``meta["config"]``, the resolved tower dtype and
profile) with what a cached video's meta recorded."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..config import DECODE_RUN_ONLY_FIELDS, to_dict

#: Model fields that identify the tokens' source (the others are run options: device, batch size,
#: and the dtype, compared resolved below).
_MODEL_FIELDS = ("model", "revision", "profile", "score_layers")
Settings = Dict[Tuple[str, str], Any]
#: The key under which :func:`run_settings` and :func:`cached_settings` hold the configuration
#: format (``FINGERPRINT_FORMAT``) a video was made under.
_FORMAT = ("format", "config")


def run_settings(cfg, identity: Dict[str, Any]) -> Settings:
    """What a video of this run records that enters its configuration fingerprint, as
    (section, field) → value: the decode settings (not limits or logging), the model, revision,
    profile and score layers, the method with the profile's pooling and clip length filled in, the
    stored dtype, and the tower dtype and profile the checkpoint resolves to (``identity``:
    :func:`aot_cli.models.identity.model_identity`)."""
    from .runconfig import profile_method

    profile = identity.get("profile") or {}
    method = profile_method(cfg, profile)
    recorded = {"decode": to_dict(cfg.decode), "model": to_dict(cfg.model), "method": to_dict(method),
                "storage": to_dict(cfg.storage)}
    from .runconfig import FINGERPRINT_FORMAT

    out = _flatten(recorded, identity.get("dtype"), profile.get("name"))
    out[_FORMAT] = FINGERPRINT_FORMAT
    return out


def cached_settings(meta: object) -> Optional[Settings]:
    """The same for a cached video, from its ``meta`` (None when it recorded no configuration)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        return None
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    profile = meta.get("profile") if isinstance(meta.get("profile"), dict) else {}
    out = _flatten(meta["config"], model.get("dtype"), profile.get("name"))
    out[_FORMAT] = meta.get("config_format")  # recorded since format 4; None: made by an older aot-cli
    return out


def _flatten(recorded: Dict[str, Any], dtype: Any, profile: Any) -> Settings:
    out: Settings = {}
    for section in ("decode", "model", "method"):
        values = recorded.get(section)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if (section == "decode" and name in DECODE_RUN_ONLY_FIELDS) or \
                    (section == "model" and name not in _MODEL_FIELDS):
                continue
            out[(section, name)] = _plain(value)
    storage = recorded.get("storage")
    if isinstance(storage, dict):
        out[("storage", "save_dtype")] = storage.get("save_dtype")
    out[("resolved", "dtype")] = dtype
    out[("resolved", "profile")] = profile
    return out


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def differences(cached: Optional[Settings], current: Settings) -> List[str]:
    """The settings that differ, one ``"--flag old -> new"`` each (config keys for settings
    without a flag), in a stable order. A cached video without a recorded configuration gives
    ``["settings not recorded"]``."""
    if cached is None:
        return ["settings not recorded"]
    out = []
    older = cached.get(_FORMAT) != current.get(_FORMAT)
    if older:  # another aot-cli decides the tokens differently (FINGERPRINT_FORMAT: what changed)
        old = cached.get(_FORMAT)
        out.append(f"made by another aot-cli version (configuration format {old if old is not None else '3 or older'}"
                   f" -> {current.get(_FORMAT)}; CHANGELOG.md says what changed)")
    for key in sorted(set(cached) | set(current), key=_order):
        if key == _FORMAT:
            continue
        old, new = cached.get(key, _ABSENT), current.get(key, _ABSENT)
        if older and old is _ABSENT:  # a setting that version did not have
            continue
        if old != new and not (key[0] == "resolved" and (old is None or new is None)):
            out.append(_describe(key, old, new))
    return out


def _order(key: Tuple[str, str]) -> Tuple[int, str, str]:
    """Settings in the order of the flag table (the budget first), then those without a flag."""
    from .cli_support import FLAG_FIELDS

    places = {target: i for i, target in enumerate(FLAG_FIELDS.values())}
    return places.get(key, len(places)), key[0], key[1]


def _describe(key: Tuple[str, str], old: Any, new: Any) -> str:
    from .settings import dashed, flag_for

    section, name = key
    if key == ("method", "inter"):
        return f"--no-inter {_onoff(not old)} -> {_onoff(not new)}"
    if section == "resolved":
        return {"dtype": "tower dtype (--dtype)", "profile": "profile (--profile)"}[name] + \
            f" {_value(old)} -> {_value(new)}"
    flag = flag_for(section, name)
    label = dashed(flag) if flag else f"{section}.{name}"
    return f"{label} {_value(old, name)} -> {_value(new, name)}"


class _Absent:
    def __repr__(self) -> str:
        return "not recorded"


_ABSENT = _Absent()


def _onoff(value: Any) -> str:
    return "on" if value else "off"


def _value(value: Any, name: str = "") -> str:
    if value is _ABSENT:
        return "not recorded"
    if value is None:
        return "none" if name == "pooling" else "default"
    if isinstance(value, bool):
        return _onoff(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def summarize(all_differences: Iterable[List[str]], most: int = 6) -> str:
    """The differences of several videos as one phrase: each distinct one once, in first-seen
    order, at most ``most`` (then "..." and how many more)."""
    seen: List[str] = []
    for diffs in all_differences:
        for d in diffs:
            if d not in seen:
                seen.append(d)
    if not seen:
        return "the checkpoint's files or how this aot version fingerprints a configuration"
    shown = ", ".join(seen[:most])
    return shown + (f", ... ({len(seen) - most} more)" if len(seen) > most else "")
