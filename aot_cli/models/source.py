"""Where a model's files come from, and reading only the tensors that are needed.

``--model`` is resolved in this order:

1. a name in :data:`NAMED_MODELS` (e.g. ``dinov2-small-offline``) -> the directory its resolver
   returns;
2. an existing local directory (it must hold ``config.json``);
3. something that looks like a path (starts with ``/``, ``.`` or ``~``) but does not exist ->
   error;
4. a Hugging Face hub id. Files are taken from the local HF cache first (no network); files not
   cached are downloaded one at a time with ``hf_hub_download`` unless ``HF_HUB_OFFLINE`` (or
   ``TRANSFORMERS_OFFLINE``) is set. Before the first download the hub is asked once for the
   file's metadata (one HEAD request, no retries, at most :data:`HUB_PROBE_TIMEOUT` seconds
   including the name look-up): an unreachable hub is then one clear error instead of
   ``hf_hub_download``'s retries. Only the files a loader asks for are fetched, so a LLaVA
   checkpoint downloads its config, its weight index and the shards holding the vision tower,
   projector and newline, never the language-model shards.

:func:`checkpoint_identity` describes what a resolved checkpoint is (hub commit, or the contents
of a local directory's small JSON files, and the size and the sha256 of the first and last MiB of
the others)
without reading its weights, for resume decisions.

:class:`WeightReader` reads named tensors from ``model.safetensors`` or the shards listed in
``model.safetensors.index.json``, opening only the shards that hold a requested tensor and
recording what it opened and read.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional

if TYPE_CHECKING:
    import torch

from aot_cli.models.errors import ModelLoadError, first_line

OFFLINE_HINT = "pass a local directory containing config.json, or --model dinov2-small-offline"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
#: Seconds the one probe of the hub may take (name look-up, connection and answer together).
HUB_PROBE_TIMEOUT = 4.0
#: JSON files of a local checkpoint up to this size are hashed by :func:`checkpoint_identity`.
IDENTITY_HASH_LIMIT = 1 << 20
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
_TRUE = {"1", "true", "yes", "on"}


def _dinov2_small_offline() -> Path:
    """The converted DINOv2-S/14 directory built by :mod:`aot_cli.models.dinov2_offline`."""
    from aot_cli.models.dinov2_offline import offline_model_dir

    return offline_model_dir()


NAMED_MODELS: Dict[str, Callable[[], Path]] = {"dinov2-small-offline": _dinov2_small_offline}


def register_named_model(name: str, resolver: Callable[[], Path]) -> None:
    """Make ``--model name`` resolve to the directory ``resolver()`` returns."""
    NAMED_MODELS[name] = resolver


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache directory, read from the environment at call time
    (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub, else huggingface_hub's default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` is set (read at call time)."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@dataclass
class ModelSource:
    """A resolved ``--model``: ``kind`` is "local", "named" or "hub"; ``root`` the directory
    holding ``config.json`` (for the hub: the cache snapshot directory); ``commit`` the hub
    commit when known."""

    spec: str
    kind: str
    root: Path
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    commit: Optional[str] = None
    cache_dir: Optional[Path] = None
    offline: bool = False
    #: Why the hub counts as unreachable (set when a probe got no answer), for error messages.
    unreachable: Optional[str] = None
    probed: bool = False  # the hub answered the one metadata probe

    def file(self, name: str, required: bool = False) -> Optional[Path]:
        """Local path of the checkpoint file ``name`` (fetched from the hub if needed), or None
        when the checkpoint has no such file. ``required`` turns None into ModelLoadError."""
        path = self._local_file(name) if self.kind != "hub" else self._hub_file(name)
        if path is None and required:
            if self.kind == "hub" and self.offline:
                raise ModelLoadError(
                    f"{self.location(name)}: not in the Hugging Face cache ({self.cache_dir}) and the hub is"
                    f" offline or unreachable; {OFFLINE_HINT}"
                )
            raise ModelLoadError(f"{self.location(name)}: file not found in the checkpoint")
        return path

    def json(self, name: str) -> Optional[dict]:
        """The parsed JSON file ``name`` or None when absent; unreadable JSON raises ModelLoadError."""
        path = self.file(name)
        if path is None:
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from None

    def location(self, name: str = "") -> str:
        """Human-readable location of ``name`` for messages (a path, or ``repo@revision/name``)."""
        if self.kind == "hub" and self.commit is None:
            return f"{self.repo_id}@{self.revision or 'main'}/{name}".rstrip("/")
        return str(self.root / name) if name else str(self.root)

    def _local_file(self, name: str) -> Optional[Path]:
        path = self.root / name
        return path if path.is_file() else None

    def _hub_file(self, name: str) -> Optional[Path]:
        """Cache first; then one download attempt. When the hub turns out to be unreachable the
        source switches to cache-only, so later (optional) files do not wait on the network again."""
        from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        revision = self.commit or self.revision
        cached = try_to_load_from_cache(self.repo_id, name, cache_dir=self.cache_dir, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        if cached is _CACHED_NO_EXIST or self.offline:
            return None
        if not self.probed and not self._probe(name, revision):
            return None
        try:
            return Path(hf_hub_download(self.repo_id, name, revision=revision, cache_dir=self.cache_dir))
        except LocalEntryNotFoundError:  # not cached and the hub is unreachable
            self.offline = True
            return None
        except EntryNotFoundError:
            return None
        except Exception as exc:  # repository / revision / auth / HTTP errors
            raise ModelLoadError(f"{self.location(name)}: {type(exc).__name__}: {first_line(exc)}") from None


    def _probe(self, name: str, revision: Optional[str]) -> bool:
        """Ask the hub once for ``name``'s metadata, with no retries and a hard deadline of
        :data:`HUB_PROBE_TIMEOUT` seconds (the request runs in a daemon thread, so a name look-up
        that hangs cannot hold the run). False when the hub is unreachable (the source turns
        cache-only) or has no such file; ModelLoadError for a missing repository or revision,
        or an access error."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        outcome: Dict[str, object] = {}

        def ask() -> None:
            try:
                url = hf_hub_url(self.repo_id, name, revision=revision)
                outcome["meta"] = get_hf_file_metadata(url, timeout=HUB_PROBE_TIMEOUT, retry_on_errors=False)
            except BaseException as exc:  # reported below, in the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=ask, name="aot-hub-probe", daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(HUB_PROBE_TIMEOUT + 0.5)
        waited = time.monotonic() - started
        error = outcome.get("error")
        if worker.is_alive() or (error is not None and not isinstance(error, (HfHubHTTPError, EntryNotFoundError))):
            self.offline = True  # no answer: unreachable (DNS, connection, proxy, timeout)
            timed_out = worker.is_alive() or waited >= HUB_PROBE_TIMEOUT
            self.unreachable = (f"the hub did not answer within {HUB_PROBE_TIMEOUT:g} s" if timed_out
                                else f"the hub cannot be reached ({type(error).__name__}: {first_line(error)[:120]})")
            return False
        if isinstance(error, EntryNotFoundError):
            self.probed = True
            return False
        if error is not None:
            raise ModelLoadError(f"{self.location(name)}: {_hub_error(error)}") from None
        self.probed = True
        return True


def _hub_error(exc: BaseException) -> str:
    """One line for an error answer of the hub."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return "the repository is gated; accept its terms on the hub and log in (hf auth login)"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository on the hub (or it is private: log in with hf auth login)"
    if isinstance(exc, RevisionNotFoundError):
        return "no such revision in the repository"
    return f"the hub answered with an error ({first_line(exc)})"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec or spec.endswith("/")


def resolve_source(spec: str, revision: Optional[str] = None) -> ModelSource:
    """Resolve ``--model`` (see the module docstring). Raises ModelLoadError (one line: where it
    looked and what to pass instead) when nothing is found."""
    if spec in NAMED_MODELS:
        return _named_source(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{path / CONFIG_FILE}: no config.json in the model directory")
        return ModelSource(spec=spec, kind="local", root=path.resolve())
    if path.exists():
        raise ModelLoadError(f"{path}: is a file; --model takes a checkpoint directory or a hub id")
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise ModelLoadError(f"{path}: no such model directory; {OFFLINE_HINT}")
    return _hub_source(spec, revision)


def _named_source(name: str) -> ModelSource:
    try:
        root = Path(NAMED_MODELS[name]())
    except ModelLoadError:
        raise
    except Exception as exc:  # the resolver's own one-line errors (missing package, conversion)
        raise ModelLoadError(f"--model {name}: {first_line(exc)}") from None
    if not (root / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{root / CONFIG_FILE}: named model '{name}' has no config.json")
    return ModelSource(spec=name, kind="named", root=root)


def _hub_source(repo_id: str, revision: Optional[str]) -> ModelSource:
    cache_dir = hub_cache_dir()
    offline = hub_offline()
    source = ModelSource(
        spec=repo_id, kind="hub", root=cache_dir, repo_id=repo_id, revision=revision,
        cache_dir=cache_dir, offline=offline,
    )
    config = source.file(CONFIG_FILE)
    if config is None:
        if offline:
            why = "HF_HUB_OFFLINE is set"
        else:
            why = (source.unreachable or "the hub cannot be reached") if source.offline else "the hub has no such file"
        raise ModelLoadError(
            f"{repo_id}: not a local directory and no config.json in the Hugging Face cache ({cache_dir});"
            f" {why}; {OFFLINE_HINT}"
        )
    source.root = config.parent
    source.commit = _snapshot_commit(config)
    return source


def _snapshot_commit(path: Path) -> Optional[str]:
    """The commit hash of a file inside ``.../snapshots/<commit>/`` (None otherwise)."""
    parts = path.parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


#: Bytes read from each end of a weight file for the checkpoint identity.
IDENTITY_SAMPLE = 1 << 20


def _ends_sha256(path: Path, size: int) -> str:
    """sha256 of the first and the last :data:`IDENTITY_SAMPLE` bytes of ``path`` (all of it when
    smaller)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(IDENTITY_SAMPLE))
        if size > 2 * IDENTITY_SAMPLE:
            handle.seek(size - IDENTITY_SAMPLE)
        digest.update(handle.read(IDENTITY_SAMPLE))
    return digest.hexdigest()


def checkpoint_identity(source: ModelSource) -> Dict[str, object]:
    """What the checkpoint is, read without its weights, as JSON-ready data: for the hub the
    commit; for a local or named directory, the sha256 of every JSON file up to
    :data:`IDENTITY_HASH_LIMIT` bytes (configs, preprocessing) and, for every other file directly
    in it (weights), its size and the sha256 of its first and last :data:`IDENTITY_SAMPLE` bytes
    (a bounded read, never the whole file). A checkpoint replaced in place gets a different
    identity, so cached videos made with the old one are recomputed; a copy of the same checkpoint
    elsewhere (another node, another directory) keeps its identity, so a resumed run skips them."""
    if source.kind == "hub":
        return {"source": "hub", "repo_id": source.repo_id, "commit": source.commit or source.revision}
    files: Dict[str, object] = {}
    try:
        names = sorted(os.listdir(source.root))
    except OSError as exc:
        raise ModelLoadError(f"{source.root}: cannot list the checkpoint ({exc.strerror or exc})") from None
    for name in names:
        path = source.root / name
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            if name.endswith(".json") and st.st_size <= IDENTITY_HASH_LIMIT:
                files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                files[name] = [st.st_size, _ends_sha256(path, st.st_size)]
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return {"source": source.kind, "files": files}


@dataclass
class WeightReader:
    """Named tensors of a safetensors checkpoint, read lazily.

    ``weight_map``: tensor name -> shard file name (one entry per tensor; a single-file
    checkpoint maps everything to ``model.safetensors``). ``opened`` / ``read`` record the shard
    files opened and the tensor names read, for provenance and tests.
    """

    source: ModelSource
    weight_map: Dict[str, str]
    opened: List[str] = field(default_factory=list)
    read: List[str] = field(default_factory=list)

    @classmethod
    def open(cls, source: ModelSource) -> "WeightReader":
        """Index the checkpoint's safetensors weights (``model.safetensors.index.json`` first,
        then ``model.safetensors``). Raises ModelLoadError when there are none."""
        index = source.json(SAFETENSORS_INDEX)
        if index is not None:
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ModelLoadError(f"{source.location(SAFETENSORS_INDEX)}: no weight_map in the index")
            return cls(source, {str(k): str(v) for k, v in weight_map.items()})
        single = source.file(SAFETENSORS_FILE)
        if single is None:
            raise ModelLoadError(
                f"{source.location(SAFETENSORS_FILE)}: no safetensors weights (model.safetensors or"
                f" {SAFETENSORS_INDEX}); convert the checkpoint to safetensors"
            )
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            names = list(handle.keys())
        return cls(source, {name: SAFETENSORS_FILE for name in names})

    @property
    def names(self) -> List[str]:
        return list(self.weight_map)

    def load(self, names: Iterable[str]) -> Dict[str, torch.Tensor]:
        """Read ``names`` (CPU tensors in the checkpoint dtype), opening each needed shard once."""
        from safetensors import safe_open

        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in self.weight_map]
        if missing:
            raise ModelLoadError(f"{self.source.location()}: checkpoint lacks tensor '{missing[0]}'")
        by_shard: Dict[str, List[str]] = {}
        for name in wanted:
            by_shard.setdefault(self.weight_map[name], []).append(name)
        tensors: Dict[str, torch.Tensor] = {}
        for shard, shard_names in by_shard.items():
            path = self.source.file(shard, required=True)
            try:
                with safe_open(str(path), framework="pt", device="cpu") as handle:
                    self.opened.append(shard)
                    for name in shard_names:
                        tensors[name] = handle.get_tensor(name)
                        self.read.append(name)
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(f"{path}: cannot read safetensors shard ({first_line(exc)})") from None
        return tensors


WEIGHT_FILES = (SAFETENSORS_INDEX, SAFETENSORS_FILE, "pytorch_model.bin.index.json", "pytorch_model.bin")


def ensure_weight_files(source: ModelSource) -> str:
    """Make every weight file of the checkpoint available locally (fetching from the hub when
    needed) so ``from_pretrained(source.root)`` can load it; returns the weight file or index
    name used. Raises ModelLoadError when the checkpoint has no weights."""
    for name in WEIGHT_FILES:
        path = source.file(name)
        if path is None:
            continue
        if name.endswith(".index.json"):
            index = source.json(name) or {}
            for shard in sorted(set((index.get("weight_map") or {}).values())):
                source.file(shard, required=True)
        return name
    raise ModelLoadError(f"{source.location()}: no weights found (looked for {', '.join(WEIGHT_FILES)})")
