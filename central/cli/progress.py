"""Progress bars on stderr, quiet when stderr is not a terminal or output is JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from central.trainer.pipeline import Progress as StageProgress

_STAGES = {
    "examples": "replaying sessions into examples",
    "fit": "fitting the ranker",
    "export": "exporting to ONNX and quantizing",
    "validate": "validation replay (fp32, int8)",
    "tables": "building the bundle's tables",
}


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Progress]:
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled or not console.is_terminal,
        transient=False,
    ) as progress:
        yield progress


def stage_reporter(progress: Progress) -> StageProgress:
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(_STAGES.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return report
