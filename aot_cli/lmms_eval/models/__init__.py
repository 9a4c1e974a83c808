"""The plugin's models and their registry, in the two forms lmms-eval reads.

:data:`MODELS` is the one table: lmms-eval model name -> (class name in
``aot_cli.lmms_eval.models.<name>``, the cache profile the model reads). A family is one row here,
one small module defining the class (a subclass of :class:`~.base.AotCachedModel` naming itself)
and one consumer in :data:`aot_cli.downstream.inputs.CONSUMERS` (how its checkpoint loads and how
a question and a cached video become its inputs).

- ``AVAILABLE_MODELS`` (name -> class): read when ``LMMS_EVAL_PLUGINS=aot_cli.lmms_eval`` is set
  (lmms-eval's ``models/__init__.py``).
- :func:`manifests`: the ``lmms_eval.models`` entry point declared in aot's ``pyproject.toml``,
  so an installed aot registers the models without the environment variable.

Importing this module needs neither lmms-eval nor torch.
"""
from __future__ import annotations

MODELS = {
    "aot_llava_onevision": ("AotLlavaOneVision", "llava-onevision"),
    "aot_llava_video": ("AotLlavaVideo", "llava-video"),
    "aot_qwen2_5_vl": ("AotQwen2_5_VL", "qwen2.5-vl"),
    "aot_qwen3_vl": ("AotQwen3VL", "qwen3-vl"),
    "aot_qwen3_5": ("AotQwen3_5", "qwen3.5"),
}

AVAILABLE_MODELS = {name: cls for name, (cls, _) in MODELS.items()}


def manifests():
    """lmms-eval ``ModelManifest`` objects for :data:`AVAILABLE_MODELS` (imports lmms-eval)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=f"{__name__}.{name}.{cls}")
            for name, cls in AVAILABLE_MODELS.items()]
