"""SIGINT and SIGTERM as one exception, raised once, so that cleanup runs undisturbed."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from devtools.demo.errors import StopRequested

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While active, the first SIGINT or SIGTERM raises :class:`StopRequested` in the main
    thread; any later one, and any after :meth:`hold`, is ignored.

    Ignoring the later ones is the point: a second Ctrl-C while child processes are being
    stopped must not abandon the rest of them. Inside :meth:`deferred` a signal is only
    noted, and raised on leaving it: starting a child and recording it is not cut in two.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._held = False
        self._deferring = 0
        self._pending = False
        self._previous: dict[signal.Signals, Any] = {}

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._pending and not self._held:
                self._pending = False
                assert self.received is not None
                raise StopRequested(self.received)

    def hold(self) -> None:
        """From now on signals are ignored: cleanup has begun."""
        self._held = True

    def __enter__(self) -> StopSignals:
        for number in _STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        if self._held or self.received is not None:
            return
        self.received = signal.Signals(number).name
        if self._deferring:
            self._pending = True
            return
        raise StopRequested(self.received)
