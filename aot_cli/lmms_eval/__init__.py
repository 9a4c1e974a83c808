"""lmms-eval plugin: models that answer benchmark questions from an aot token cache.

    python -m lmms_eval --model aot_llava_onevision \\
        --model_args pretrained=CKPT,cache=CACHE_DIR,on_miss=compress --tasks TASK --output_path results/

The models (:data:`aot_cli.lmms_eval.models.MODELS`: ``aot_llava_onevision``, ``aot_llava_video``,
``aot_qwen2_5_vl``, ``aot_qwen3_vl``, ``aot_qwen3_5``)
are registered through the ``lmms_eval.models`` entry point (or ``LMMS_EVAL_PLUGINS=aot_cli.lmms_eval``);
each reads caches of one family and does its work through
:class:`aot_cli.downstream.evaluation.CachedVideoLLM`. Every evaluation writes a provenance file
beside lmms-eval's results (:mod:`aot_cli.lmms_eval.provenance`). Tested with lmms-eval 0.7.3
(generation tasks; loglikelihood requests are refused in one line there) and 0.6.1 (both).
lmms-eval is imported only by the modules of this package that need it (install it with the
``lmms-eval`` extra); importing this package itself needs nothing beyond aot.

``python -m aot_cli.lmms_eval.videos --tasks TASK`` prints the videos a task reads, one per line,
for ``aot compress --list`` (filling the cache before the evaluation, e.g. on a cluster).
"""
