"""What can end a demo early.

A subtree of :class:`protocol.errors.ProximaError` (the whole tree is drawn there), under
the tooling's root::

    ProximaError            (protocol.errors)
    └── DevtoolsError       (devtools.errors)
        └── DemoError
            └── DemoInterrupted

:class:`StopRequested` is no error but a signal's arrival, so it is not in the tree.
"""

from __future__ import annotations

from devtools.errors import DevtoolsError


class DemoError(DevtoolsError):
    """A step of the demo failed; the message says which and why, in a line or a few."""

    code = "demo_failed"


class DemoInterrupted(DemoError):
    """SIGINT or SIGTERM before the edges were serving: the demo did not get to its end."""

    code = "interrupted"


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so no ``except Exception`` swallows it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
