"""Task folder of the plugin. lmms-eval adds ``<plugin>.tasks`` to its task search path for every
package named in ``LMMS_EVAL_PLUGINS``; aot ships no tasks of its own (use lmms-eval's tasks,
or ``--include_path`` for your own)."""
