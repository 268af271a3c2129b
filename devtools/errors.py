"""Errors of the development tooling.

A subtree of :class:`protocol.errors.ProximaError` (the whole tree is drawn there); none is
an HTTP answer, so all keep the root's status (500)::

    ProximaError                      (protocol.errors)
    └── DevtoolsError
        ├── ServerBinaryNotFoundError devtools.localservers: a server's binary is not installed
        ├── ServerStartupError        devtools.localservers: a server exited or did not answer
        └── DemoError                 devtools.demo.errors: a step of the demo failed
            └── DemoInterrupted       SIGINT or SIGTERM before the edges were serving
"""

from __future__ import annotations

from protocol.errors import ProximaError


class DevtoolsError(ProximaError):
    """Root of every error raised by :mod:`devtools`."""

    code = "devtools_error"
