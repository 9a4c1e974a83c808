"""The videos lmms-eval tasks read, one path per line, for ``aot compress --list``.

    python -m aot_cli.lmms_eval.videos --tasks videomme,mvbench -o videos.txt
    aot compress --list videos.txt -o cache/ --model CKPT --ratio 0.1

The tasks are built by lmms-eval itself (``TaskManager`` and ``get_task_dict``, so a task that
downloads its videos does so now, as the evaluation would) and every evaluation document goes
through the task's own ``doc_to_visual``; the paths are printed as the task gives them, each
once, in document order. ``--include_path`` adds task folders (as lmms-eval's flag does) and
``--limit N`` takes the first N documents of each task (lmms-eval's ``--limit``). A document
whose visual is not a file path (images, frame lists) stops the listing with one line.
Exit status: 0 listed, 2 bad task or visual.
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


def task_videos(tasks: Sequence[str], include_path: Optional[Sequence[str]] = None,
                limit: Optional[int] = None) -> List[str]:
    """The video paths of lmms-eval ``tasks`` (names, as for ``--tasks``), unique, in document
    order. Raises ValueError (one line) for an unknown task or a visual that is not a path."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager("WARNING", include_path=list(include_path) if include_path else None)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise ValueError(f"unknown lmms-eval task(s): {', '.join(missing)}")
    seen: dict = {}
    for task in _tasks(get_task_dict(list(tasks), manager)):
        name = task.config.task
        for number, doc in enumerate(task.eval_docs):
            if limit is not None and number >= limit:
                break
            for visual in _paths(task.doc_to_visual(doc)):
                if not isinstance(visual, (str, Path)):
                    raise ValueError(f"task {name} doc {number} gives a {type(visual).__name__} visual, not a video "
                                     "path; aot caches videos named by their file path")
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
