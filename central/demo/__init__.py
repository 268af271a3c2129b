"""``proxima demo``: the whole system on one machine, from a fresh install.

Starts real servers and edge nodes as child processes in a temporary directory, trains a
bundle on a synthetic shop log, replays the sessions it held back through the edges, and
reports what happened; :mod:`central.demo.runner` holds the steps. This module stays light
so the command line can describe the command without importing it.
"""

from __future__ import annotations

DEFAULT_SESSIONS = 2_000
