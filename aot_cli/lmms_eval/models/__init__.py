"""The plugin's model registry, in the two forms lmms-eval reads.

- ``AVAILABLE_MODELS`` (name -> class in ``aot_cli.lmms_eval.models.<name>``): read when
  ``LMMS_EVAL_PLUGINS=aot_cli.lmms_eval`` is set (lmms-eval's ``models/__init__.py``).
- :func:`manifests`: the ``lmms_eval.models`` entry point declared in aot's ``pyproject.toml``,
  so an installed aot registers the models without the environment variable.
"""
from __future__ import annotations

AVAILABLE_MODELS = {
    "aot_llava_onevision": "AotLlavaOneVision",
    "aot_llava_video": "AotLlavaVideo",
}


def manifests():
    """lmms-eval ``ModelManifest`` objects for :data:`AVAILABLE_MODELS` (imports lmms-eval)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=f"{__name__}.{name}.{cls}")
            for name, cls in AVAILABLE_MODELS.items()]
