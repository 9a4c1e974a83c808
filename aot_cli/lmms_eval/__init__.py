"""lmms-eval plugin: models that answer benchmark questions from an aot token cache.

    LMMS_EVAL_PLUGINS=aot_cli.lmms_eval python -m lmms_eval --model aot_llava_onevision \\
        --model_args pretrained=CKPT,cache=CACHE_DIR,on_miss=compress --tasks TASK

``aot_llava_onevision`` reads caches made with a LLaVA-OneVision checkpoint (one newline after
the video), ``aot_llava_video`` caches made with a LLaVA-Video checkpoint (a newline after every
frame row). Both run a transformers ``LlavaOnevisionForConditionalGeneration``; the work is done
by :class:`aot_cli.downstream.evaluation.CachedVideoLLM`. lmms-eval is imported only by the
modules of this package (install it with the ``lmms-eval`` extra); importing this package itself
needs nothing beyond aot.

``python -m aot_cli.lmms_eval.videos --tasks TASK`` prints the videos a task reads, one per line,
for ``aot compress --list`` (filling the cache before the evaluation, e.g. on a cluster).
"""
