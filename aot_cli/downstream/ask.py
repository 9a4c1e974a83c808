"""``aot ask``: answer a question about one cached video with the full video LLM.

Loads the checkpoint of the cache's family (:data:`aot_cli.downstream.inputs.CONSUMERS`:
LLaVA-OneVision / LLaVA-Video, ``model_type`` ``llava_onevision``; Qwen2.5-VL, Qwen3-VL, Qwen3.5
and their MoE variants) and its processor (or, when the processor cannot be built, e.g. without
torchvision, its tokenizer), turns the question and the cached tokens into the model's inputs
(:func:`~aot_cli.downstream.inputs.model_inputs`) and generates greedily. The vision tower is
loaded with the checkpoint but never run.

Never runs code from a checkpoint: every transformers call gets ``trust_remote_code=False``, so a
checkpoint that needs its own code is refused in one line (transformers would otherwise ask
interactively). A hub id is resolved the way ``--model`` of ``aot compress`` is (local cache
first, then one short probe of the hub): an unreachable hub is one line, and a checkpoint found
in the cache while the hub is unreachable loads from the cache only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .. import devices

from aot_cli.cache import TokenCache
from aot_cli.models.errors import first_line

from .errors import DownstreamError
from .generation import generate_texts
from .inputs import CONSUMERS, Consumer, consumer_for_meta, model_inputs, supported_model_types
from .llava import cached_parts


@dataclass
class Answer:
    """What :func:`ask_cached_video` returns: the decoded ``text``, the ``video_id`` asked about,
    ``video_tokens`` (cached tokens fed to the LLM, LLaVA's newlines included), ``prompt_tokens``
    (the whole prompt) and ``new_tokens`` (generated)."""

    text: str
    video_id: str
    video_tokens: int
    prompt_tokens: int
    new_tokens: int


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; otherwise a torch device string."""
    try:
        return devices.resolve_device(name)
    except devices.DeviceError as e:
        raise DownstreamError(str(e)) from None


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on CUDA (fp16 where bf16 is unsupported), fp32 elsewhere; else fp32/bf16/fp16."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return devices.named_dtype(name)
    except devices.DeviceError as e:
        raise DownstreamError(str(e)) from None


def looks_like_missing_path(checkpoint: str) -> bool:
    """True for a filesystem path that does not exist (a hub id is ``owner/name``: one slash, no
    leading ``/``, ``.`` or ``~``), so no hub lookup is attempted for a mistyped directory."""
    path = Path(checkpoint).expanduser()
    if path.exists():
        return False
    return checkpoint.startswith(("/", ".", "~")) or checkpoint.count("/") > 1 or "\\" in checkpoint


def load_options(checkpoint: str, revision: Optional[str] = None) -> Dict[str, Any]:
    """Keyword arguments for every ``from_pretrained`` of ``checkpoint``: the revision,
    ``trust_remote_code=False`` and, for a hub id whose hub is unreachable (or offline),
    ``local_files_only=True``. Raises DownstreamError (one line) for a missing directory, or a
    hub id that is neither cached nor reachable."""
    options: Dict[str, Any] = {"revision": revision, "trust_remote_code": False}
    if looks_like_missing_path(checkpoint):
        raise DownstreamError(f"{checkpoint}: no such checkpoint directory")
    if Path(checkpoint).expanduser().is_dir():
        return options
    from ..models.errors import ModelLoadError
    from ..models.source import OFFLINE_HINT, resolve_source

    try:
        source = resolve_source(checkpoint, revision)
    except ModelLoadError as exc:
        raise DownstreamError(str(exc).replace(OFFLINE_HINT, "pass a local checkpoint directory")) from None
    if source.kind == "hub" and source.offline:
        options["local_files_only"] = True
    return options


def checkpoint_config(checkpoint: str, revision: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """``(config, options)``: the checkpoint's transformers config and the :func:`load_options`
    for loading it. Raises DownstreamError (one line) when the config cannot be read."""
    from transformers import AutoConfig

    options = load_options(checkpoint, revision)
    try:
        config = AutoConfig.from_pretrained(checkpoint, **options)
    except Exception as exc:  # noqa: BLE001 - any failure to read the config is reported the same way
        raise DownstreamError(f"{checkpoint}: cannot read the model config ({first_line(exc)})") from None
    return config, options


def checked_consumer(checkpoint: str, config: Any, consumer: Optional[Consumer] = None) -> Consumer:
    """The consumer that reads the checkpoint whose transformers config is ``config``: ``consumer``
    when given (its ``model_type`` must be one of the consumer's), else the first consumer of its
    ``model_type``. Raises DownstreamError (one line) for a checkpoint no consumer reads
    (:func:`~aot_cli.downstream.inputs.supported_model_types`; LLaVA-NeXT (lmms-lab) checkpoints
    need the original LLaVA-NeXT code, docs/consumers.md)."""
    model_type = getattr(config, "model_type", None)
    if consumer is not None:
        if model_type not in consumer.model_types:
            raise DownstreamError(f"{checkpoint}: model_type {model_type!r} is not a {consumer.family} checkpoint "
                                  f"(model_type {', '.join(consumer.model_types)}), the family of the cache")
        return consumer
    for candidate in CONSUMERS.values():
        if model_type in candidate.model_types:
            return candidate
    raise DownstreamError(f"{checkpoint}: model_type {model_type!r} is not a video LLM that reads aot caches "
                          f"(supported: {', '.join(supported_model_types())}; LLaVA-NeXT checkpoints need their own "
                          "code, see docs/consumers.md)")


def check_checkpoint(checkpoint: str, revision: Optional[str] = None,
                     consumer: Optional[Consumer] = None) -> Dict[str, Any]:
    """:func:`checked_consumer` for ``checkpoint``'s config; returns the :func:`load_options` for
    loading it."""
    config, options = checkpoint_config(checkpoint, revision)
    checked_consumer(checkpoint, config, consumer)
    return options


def load_text_side(checkpoint: str, revision: Optional[str] = None, **options: Any) -> Any:
    """The checkpoint's processor when it can be built (it carries the chat template), else its
    tokenizer, carrying the chat template the processor would have used
    (:func:`processor_chat_template`; many checkpoints keep it in ``chat_template.json`` or
    ``chat_template.jinja`` rather than in ``tokenizer_config.json``). Only the text side is used.
    ``options``: :func:`load_options` (default: the revision and ``trust_remote_code=False``).
    Raises DownstreamError (one line) when no tokenizer loads or the template files cannot be read."""
    from transformers import AutoProcessor, AutoTokenizer

    options = {"revision": revision, **options, "trust_remote_code": False}
    try:
        processor = AutoProcessor.from_pretrained(checkpoint, **options)
        if getattr(processor, "tokenizer", None) is not None:
            return processor
    except Exception:  # noqa: BLE001 - e.g. the video processor needs torchvision; fall back
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, **options)
    except Exception as exc:  # noqa: BLE001
        raise DownstreamError(f"{checkpoint}: cannot load a tokenizer ({first_line(exc)})") from None
    template = processor_chat_template(checkpoint, **options)
    if template is not None:
        tokenizer.chat_template = template  # what the processor's apply_chat_template would render
    return tokenizer


def processor_chat_template(checkpoint: str, **options: Any) -> Optional[str]:
    """The chat template a processor of ``checkpoint`` would carry, read from its files without
    building the processor (whose video processor may need torchvision): transformers'
    ``ProcessorMixin.get_processor_dict``, so its order holds -- a ``chat_template`` key in
    ``processor_config.json``, else ``chat_template.json`` (key ``chat_template``), else
    ``chat_template.jinja``. Several named templates: the ``default`` one. None when the
    checkpoint has none (the tokenizer's own then applies). ``options``: as for
    ``from_pretrained`` (revision, ``local_files_only``). Raises DownstreamError (one line) for
    template files that cannot be read."""
    from transformers.processing_utils import ProcessorMixin

    try:
        data, _ = ProcessorMixin.get_processor_dict(checkpoint, **options)
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, a file that cannot be fetched
        raise DownstreamError(f"{checkpoint}: cannot read the processor's chat template ({first_line(exc)})") \
            from None
    template = data.get("chat_template") if isinstance(data, dict) else None
    if isinstance(template, dict):
        template = template.get("default")
    if template is not None and not isinstance(template, str):
        raise DownstreamError(f"{checkpoint}: the processor's chat template is a {type(template).__name__}, "
                              "not a Jinja template string")
    return template or None


def load_generator(checkpoint: str, *, consumer: Optional[Consumer] = None, device: str = "auto",
                   dtype: str = "auto", revision: Optional[str] = None) -> Tuple[Any, Any]:
    """``(model, processor_or_tokenizer)``: the whole video LLM of ``checkpoint`` (the transformers
    class of ``consumer``, or of the consumer that reads the checkpoint's ``model_type``) in eval
    mode on ``device`` in ``dtype``, and its text side (:func:`load_text_side`). Raises
    DownstreamError (one line) for a checkpoint of another family or one that cannot be loaded."""
    import transformers

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    config, options = checkpoint_config(checkpoint, revision)
    consumer = checked_consumer(checkpoint, config, consumer)
    try:
        model_class = getattr(transformers, consumer.model_class)  # imports the modelling code
        model = model_class.from_pretrained(checkpoint, dtype=torch_dtype, **options)
    except Exception as exc:  # noqa: BLE001
        from ..models.torchvision_check import explain_import_failure

        text = f"{checkpoint}: cannot load the {consumer.family} model ({first_line(exc)})"
        raise DownstreamError(explain_import_failure(text, exc)) from None
    return model.to(torch_device).eval(), load_text_side(checkpoint, **options)


def pick_video(cache: TokenCache, video_id: Optional[str]) -> str:
    """The id ``video_id`` names (the id, or a file name only one id ends with, as ``aot
    inspect --video``), or the only video of a one-video cache (:meth:`TokenCache.resolve`;
    ``UnknownVideoError`` otherwise)."""
    return cache.resolve(video_id)


def ask_cached_video(cache_path: Union[str, Path], video_id: Optional[str], checkpoint: str, question: str, *,
                     max_new_tokens: int = 64, device: str = "auto", dtype: str = "auto",
                     revision: Optional[str] = None) -> Answer:
    """Answer ``question`` about video ``video_id`` of the cache at ``cache_path`` with the video
    LLM ``checkpoint`` (local directory or hub id). The cache is checked (an LLM family's vision
    side, of the checkpoint's family) before the model is loaded. Raises :class:`DownstreamError`
    or the cache's ``CacheError``."""
    if max_new_tokens < 1:
        raise DownstreamError(f"--max-new-tokens {max_new_tokens}: must be at least 1")
    with TokenCache(cache_path) as cache:
        video = cache[pick_video(cache, video_id)]
        tokens, _, meta, where = cached_parts(video)
        consumer = consumer_for_meta(meta, where)
        model, text_side = load_generator(checkpoint, consumer=consumer, device=device, dtype=dtype,
                                          revision=revision)
        with torch.inference_mode():
            inputs = model_inputs(model, text_side, question, video)
            texts, new_ids = generate_texts(model, text_side, inputs, max_new_tokens=max_new_tokens)
    return Answer(text=texts[0], video_id=video.id, video_tokens=int(tokens.shape[0]),
                  prompt_tokens=int(inputs["attention_mask"].shape[1]), new_tokens=int(new_ids[0].numel()))
