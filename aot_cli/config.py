"""Configuration, split by concern. Every dataclass here is plain data, JSON-serialisable through
:func:`to_dict`, and recorded in every output the tool writes.

- :class:`DecodeConfig`  how frames are read and sampled from a video
- :class:`ModelConfig`   which vision tower / video-LLM checkpoint produces the tokens
- :class:`MethodConfig`  the AOT method's parameters (see ``aot_cli.core``)
- :class:`StorageConfig` how the cache is written
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

from .safejson import loads as bounded_json

#: Choices of the tower dtype and of the stored token dtype.
MODEL_DTYPES = ("auto", "bf16", "fp16", "fp32")
SAVE_DTYPES = ("model", "fp32", "bf16", "fp16")
#: Largest config file read (bytes) and deepest JSON/TOML nesting accepted in config files and
#: manifest rows (a config needs three levels).
MAX_CONFIG_BYTES = 1 << 20
MAX_JSON_DEPTH = 32


@dataclass
class DecodeConfig:
    """Frame sampling and decoding (validated by ``aot_cli.video.sampling.check_decode_config``).

    ``frames``: number of frames sampled uniformly over [start, end) (None: the model profile's
    default). ``fps``: sample at this rate instead, capped at ``max_frames``. ``start``/``end`` in
    seconds. ``decoder``: "auto" or "pyav" (PyAV: keyframe-accurate seeks where the container's
    index allows them, else a sequential read) or "decord" (kept only where its pictures match). ``timeout``: seconds without decoding progress after which a decode is abandoned as hung.
    ``stream``: index of the video stream to read (None: FFmpeg's best video stream, never a cover
    picture). ``decoder_log``: FFmpeg/decord messages shown on stderr: "quiet" (none), "error",
    "warning", "info" or "debug". ``frame_limit``: most frames one video may give (refusal above).
    ``pixel_limit``: most pixels (width x height) a video's pictures may have (refusal above).
    ``seek``: "exact" (default: the sampled frames themselves) or "keyframe" (each sampled frame
    replaced by the keyframe at or before it: one keyframe decode per frame, for throughput-bound
    dataset runs; the pictures used are recorded). ``size``: the size pictures are decoded at:
    "auto" (the model's choice: the processor's own input for the Qwen families, which resize
    native frames; about twice the tower's input for the others), "native" (the stored size, at
    display aspect) or "tower" (about twice the tower's input: less memory and time on large
    videos; for the Qwen families the tokens then move slightly from the processor's).
    """

    frames: Optional[int] = None
    fps: Optional[float] = None
    max_frames: Optional[int] = None
    start: Optional[float] = None
    end: Optional[float] = None
    decoder: str = "auto"
    timeout: float = 60.0
    stream: Optional[int] = None
    decoder_log: str = "quiet"
    frame_limit: int = 1024
    pixel_limit: int = 8192 * 8192
    seek: str = "exact"
    size: str = "auto"


#: DecodeConfig fields that never change the frames of a video that decodes (limits, logging,
#: time budget): leave them out of anything that identifies cached content.
DECODE_RUN_ONLY_FIELDS = ("timeout", "decoder_log", "frame_limit", "pixel_limit")


@dataclass
class ModelConfig:
    """The tower. ``model`` is a hub id, a local directory or a named offline model.
    ``device``: "auto" picks CUDA when present. ``dtype``: "auto", "bf16", "fp16" or "fp32".
    ``score_layers``: the two attention layers (shallow, deep) whose received-attention scores
    drive anchor selection; None means the profile's default."""

    model: str = "google/siglip-so400m-patch14-384"
    revision: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    batch_frames: int = 16
    score_layers: Optional[Tuple[int, int]] = None
    profile: Optional[str] = None

    def validate(self) -> None:
        """Raise ValueError (one line, naming the field) for values that cannot work. The model
        itself, the device and the profile name are checked when the model is resolved."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a hub id, a directory or a named model, got {self.model!r}")
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(MODEL_DTYPES)}, got {self.dtype!r}")
        if isinstance(self.batch_frames, bool) or not isinstance(self.batch_frames, int) or self.batch_frames < 1:
            raise ValueError(f"batch_frames must be an integer >= 1, got {self.batch_frames!r}")
        if self.score_layers is not None:
            layers = self.score_layers
            if (not isinstance(layers, (tuple, list)) or len(layers) != 2
                    or any(isinstance(x, bool) or not isinstance(x, int) for x in layers)):
                raise ValueError(f"score_layers must be two integers like 5,-2, got {layers!r}")


@dataclass
class StorageConfig:
    """Cache writing. ``save_dtype``: "model" (the tower's dtype), "fp32", "bf16" or "fp16".
    ``shard_size``: bytes at which a cache shard is closed."""

    save_dtype: str = "model"
    shard_size: int = 1 << 30

    def validate(self) -> None:
        """Raise ValueError (one line, naming the field) for values that cannot work."""
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {', '.join(SAVE_DTYPES)}, got {self.save_dtype!r}")
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ValueError(f"shard_size must be a whole number of bytes >= 1 (e.g. 500MB, 2GiB), "
                             f"got {self.shard_size!r}")


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: Any) -> int:
    """Bytes from ``1048576``, ``500MB``, ``2GiB`` (decimal k/M/G/T and binary Ki/Mi/Gi/Ti units);
    ints pass through. ValueError (one line) for anything else, for fractions of a byte and for
    sizes below one byte."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r} (e.g. 1GiB, 500MB, 1048576)")
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", str(text).lower())
        if not m or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"not a size: {text!r} (e.g. 1GiB, 500MB, 1048576)")
        exact = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
        value = int(exact)
        if value != exact:
            raise ValueError(f"{text!r} is not a whole number of bytes")
    if value < 1:
        raise ValueError(f"a size must be at least 1 byte, got {text!r}")
    return value


def _nesting(value: Any, depth: int = 0) -> int:
    if isinstance(value, dict):
        return max([_nesting(v, depth + 1) for v in value.values()], default=depth + 1)
    if isinstance(value, list):
        return max([_nesting(v, depth + 1) for v in value], default=depth + 1)
    return depth


def read_config_file(path: Any) -> dict:
    """A JSON (``.json`` or any other name) or TOML (``.toml``) config file as a dict. ValueError
    with one line that starts with the path: missing or unreadable, not a regular file, larger
    than :data:`MAX_CONFIG_BYTES`, not UTF-8, not valid JSON/TOML, ``NaN``/``Infinity`` values,
    nested more than :data:`MAX_JSON_DEPTH` levels, or not a table/object at the top."""
    p = Path(path)
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{p}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{p}: {st.st_size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes")
        with open(p, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{p}: cannot read config file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file (not UTF-8)") from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
            if _nesting(data) > MAX_JSON_DEPTH:
                raise ValueError(f"nests tables/arrays more than {MAX_JSON_DEPTH} levels deep")
            if any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(data)):
                raise ValueError("nan and inf are not valid values")
        else:
            data = bounded_json(text, MAX_JSON_DEPTH)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"{p}: not a valid config file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config file holds an object/table of settings, got {type(data).__name__}")
    return data


def _leaves(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def to_dict(cfg: Any) -> dict:
    """A dataclass (possibly nested) as plain JSON-ready data."""
    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {str(k): convert(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return convert(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a clear error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
    kwargs = {}
    for k, v in data.items():
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)
