"""The videos lmms-eval tasks read, one path per line, for ``aot compress --list``.

    python -m aot_cli.lmms_eval.videos --tasks videomme,mvbench -o videos.txt
    aot compress --list videos.txt -o cache/ --model CKPT --ratio 0.1

The tasks are built by lmms-eval itself (``TaskManager`` and ``get_task_dict``, so a task that
downloads its videos does so now, as the evaluation would) and every evaluation document goes
through the task's own ``doc_to_visual``; the paths are printed as the task gives them, each
once, in document order. ``--include_path`` adds task folders (as lmms-eval's flag does) and
``--limit N`` takes the first N documents of each task (lmms-eval's ``--limit``). One line on
stderr and exit status 2 for: an unknown task (saying where tasks come from: lmms-eval 0.7.x wheels
ship them, 0.6.x needs ``--include_path``), a task whose documents cannot be loaded (a hub dataset
while offline), a document whose visual is not a file path (images, frame lists).
Exit status: 0 listed, 2 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence


def _tasks(task_dict: Any) -> Iterator[Any]:
    """The Task objects of a (possibly nested, for groups) lmms-eval task dictionary."""
    for value in task_dict.values():
        if isinstance(value, dict):
            yield from _tasks(value)
        elif value is not None and hasattr(value, "doc_to_visual"):
            yield value


def _paths(visuals: Any) -> List[Any]:
    if visuals is None:
        return []
    items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    flat: List[Any] = []
    for item in items:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return [v for v in flat if v is not None]


def _innermost(exc: BaseException) -> BaseException:
    """The root cause of an exception chain (through tenacity's RetryError, which lmms-eval's
    dataset loading raises after its retries)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        attempt = getattr(exc, "last_attempt", None)
        inner = attempt.exception() if attempt is not None and hasattr(attempt, "exception") else None
        inner = inner or exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ships_tasks() -> bool:
    """Whether the installed lmms-eval carries its task files (0.7.x wheels do, 0.6.x wheels do not)."""
    import lmms_eval.tasks

    return next(Path(lmms_eval.tasks.__file__).parent.rglob("*.yaml"), None) is not None


def unknown_tasks_message(missing: Sequence[str]) -> str:
    """One line for task names lmms-eval does not know, saying where tasks come from."""
    from aot_cli.lmms_eval.provenance import installed_version

    version = installed_version("lmms_eval") or "?"
    head = f"unknown lmms-eval task(s): {', '.join(missing)}"
    if not ships_tasks():
        return (f"{head}; lmms-eval {version} was installed without its task files (0.6.x wheels ship none): "
                "install lmms-eval>=0.7.3 (pip install -e '.[lmms-eval]'), or pass --include_path with a folder of "
                "task YAMLs (lmms_eval/tasks of an lmms-eval source checkout, or your own)")
    return (f"{head}; lmms-eval {version} lists its tasks with `lmms-eval tasks list`; a task of your own needs "
            "--include_path with the folder of its YAML")


def _dataset(manager: Any, name: str) -> str:
    try:
        path = manager._get_config(name).get("dataset_path")
    except Exception:  # noqa: BLE001 - only for the message
        return ""
    return f" (dataset {path})" if path else ""


def task_videos(tasks: Sequence[str], include_path: Optional[Sequence[str]] = None,
                limit: Optional[int] = None) -> List[str]:
    """The video paths of lmms-eval ``tasks`` (names, as for ``--tasks``), unique, in document
    order. Raises ValueError (one line) for an unknown task, a task whose dataset cannot be loaded
    (e.g. on the hub while offline) or a visual that is not a path."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager("WARNING", include_path=list(include_path) if include_path else None)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise ValueError(unknown_tasks_message(missing))
    seen: dict = {}
    for requested in tasks:
        try:
            task_dict = get_task_dict([requested], manager)
            loaded = [(task, list(task.eval_docs)) for task in _tasks(task_dict)]
        except Exception as exc:  # noqa: BLE001 - whatever the task's dataset loading raises
            raise ValueError(f"task {requested}{_dataset(manager, requested)}: lmms-eval cannot load its documents "
                             f"({_one_line(_innermost(exc))}); a task whose dataset is on the Hugging Face hub needs it "
                             "downloaded once (online), or use a local task YAML and dataset with --include_path") from None
        for task, docs in loaded:
            name = task.config.task
            for number, doc in enumerate(docs):
                if limit is not None and number >= limit:
                    break
                try:
                    visuals = task.doc_to_visual(doc)
                except Exception as exc:  # noqa: BLE001 - the task's own code
                    raise ValueError(f"task {name} doc {number}: its doc_to_visual failed "
                                     f"({_one_line(_innermost(exc))})") from None
                for visual in _paths(visuals):
                    if not isinstance(visual, (str, Path)):
                        raise ValueError(f"task {name} doc {number} gives a {type(visual).__name__} visual, not a "
                                         "video path; aot caches videos named by their file path")
                    seen.setdefault(str(visual), None)
    return list(seen)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aot_cli.lmms_eval.videos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", required=True, help="comma-separated lmms-eval task names")
    parser.add_argument("--include_path", action="append", help="extra task folder (repeatable)")
    parser.add_argument("--limit", type=int, help="first N documents of each task")
    parser.add_argument("-o", "--output", help="write the list here (atomically) instead of stdout")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error(f"--limit {args.limit}: must be at least 0")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    from loguru import logger  # lmms-eval's logger: its task indexing logs every file at DEBUG by default

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    try:
        videos = task_videos(tasks, args.include_path, args.limit)
    except ValueError as exc:
        print(f"aot_cli.lmms_eval.videos: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    text = "".join(f"{v}\n" for v in videos)
    if args.output:
        from aot_cli.cache import CacheError, atomic_write_bytes

        try:
            atomic_write_bytes(Path(args.output), text.encode("utf-8"))
        except CacheError as exc:
            print(f"aot_cli.lmms_eval.videos: error: {exc}", file=sys.stderr)
            return 2
        print(f"{len(videos)} video(s) of {len(tasks)} task(s) -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
