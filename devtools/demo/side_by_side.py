"""Runs one task per region on threads of their own, as the regions' traffic would not wait
on each other; the main thread keeps reporting progress and receiving stop signals."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

RegionTask = Callable[[threading.Event], None]  # returns early once the event is set

_TICK_S = 0.1


def run_side_by_side(tasks: Sequence[RegionTask], on_tick: Callable[[], None]) -> None:
    """Runs ``tasks`` side by side, calling ``on_tick`` every so often meanwhile.

    The first task to fail stops the others (at their next step) and its error is raised;
    so does anything raised in the main thread (a stop signal).
    """
    stopping = threading.Event()
    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="demo-region") as pool:
        futures = [pool.submit(task, stopping) for task in tasks]
        try:
            while not all(future.done() for future in futures):
                if any(future.done() and future.exception() for future in futures):
                    break
                on_tick()
                wait(futures, timeout=_TICK_S)
        finally:
            stopping.set()
    for future in futures:
        future.result()
    on_tick()
