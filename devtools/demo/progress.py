"""What the demo prints while it works: a banner of its steps, each step as it runs, and
progress bars (on a terminal only) for the long ones."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

BarUpdate = Callable[[str, int, int], None]  # description, done, total (0: unknown)


class StepPrinter:
    def __init__(self, console: Console, titles: Sequence[str]) -> None:
        self.console = console
        self.titles = tuple(titles)

    def banner(self, workdir: Path, closing: str) -> None:
        lines = [f"  {n}. {escape(title)}" for n, title in enumerate(self.titles, 1)]
        lines.append(f"  then: {escape(closing)}")
        lines.append(f"\nworking directory: {escape(str(workdir))}")
        self.console.print(
            Panel("\n".join(lines), title="Proxima demo", title_align="left", expand=False)
        )

    @contextmanager
    def step(self, number: int) -> Iterator[None]:
        label = f"[{number}/{len(self.titles)}] {self.titles[number - 1]}"
        self.console.print(f"[bold]>[/bold] {escape(label)}")
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.console.print(f"[red]x[/red] {escape(label)}: did not finish")
            raise
        seconds = time.perf_counter() - started
        self.console.print(f"[green]✓[/green] {escape(label)} [dim]({seconds:.1f} s)[/dim]")

    def note(self, text: str) -> None:
        self.console.print(f"    {escape(text)}", highlight=False, soft_wrap=True)

    @contextmanager
    def bar(self, description: str) -> Iterator[BarUpdate]:
        with Progress(
            TextColumn("    {task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
            transient=True,
        ) as progress:
            task = progress.add_task(description, total=None)

            def update(text: str, done: int, total: int) -> None:
                progress.update(
                    task, description=text, completed=done, total=total if total > 0 else None
                )

            yield update
