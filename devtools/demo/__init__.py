"""``proxima demo``: the whole system on one machine, from a fresh install.

Starts real servers (nats-server with JetStream, a Kafka-protocol broker, redis-server), the
central service and two edge nodes as child processes in a temporary directory; sends a
synthetic shop's history through the edges, follows the events to Kafka, waits for the
trainer's first bundle to reach both edges, replays the held-back sessions and reports what
happened. :mod:`devtools.demo.steps` holds the steps. This module stays light so the
command line can describe the command without importing it.
"""

from __future__ import annotations

# Sized so that the first bundle is trained in seconds on two cores: the trainer learns
# from the 85% of sessions that form the history.
DEFAULT_SESSIONS = 800
