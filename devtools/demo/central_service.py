"""The central service as a child process running ``proxima central run``, as an operator
would: the NATS→Kafka bridge, the continuous trainer (promoting to the demo's regions) and
the latency monitor, whose metrics it serves over HTTP."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devtools.demo.edges import child_environment
from devtools.localservers import LOCALHOST, ServerProcess, pick_free_port

CENTRAL_STARTUP_TIMEOUT_S = 90.0  # imports the trainer's libraries, joins NATS and Kafka
CENTRAL_STOP_TIMEOUT_S = 20.0  # a training under way is finished before it exits
_READY_PROBE_INTERVAL_S = 0.25
_RETRAIN_LINE = re.compile(r"(retrained on .*)$", re.MULTILINE)
_PARTITIONS = 3
_LOG_TAIL_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CentralInputs:
    nats_url: str
    kafka_bootstrap: str
    signing_key: Path
    regions: tuple[str, ...]
    min_events: int  # the first training waits until the trainer holds this many events
    retrain_events: int  # later trainings wait for this many new events


class CentralProcess(ServerProcess):
    """``proxima central run``, up once ``is_forwarding`` says so: asked of the systems it
    sets up (the bridge makes the events topic once it is ready to forward)."""

    display_name = "proxima-central"

    def __init__(
        self, inputs: CentralInputs, workdir: Path, is_forwarding: Callable[[], bool]
    ) -> None:
        self.inputs = inputs
        self.is_forwarding = is_forwarding
        self.metrics_port = 0  # chosen with the other ports
        self._probed_at = 0.0
        super().__init__(workdir, startup_timeout=CENTRAL_STARTUP_TIMEOUT_S, own_session=True)

    @property
    def metrics_url(self) -> str:
        """The latency monitor's Prometheus metrics."""
        return f"http://{LOCALHOST}:{self.metrics_port}/metrics"

    def stop(self, timeout: float = CENTRAL_STOP_TIMEOUT_S) -> None:
        super().stop(timeout)

    def last_retrain(self) -> str | None:
        """The trainer's account of its last retrain (events, time, metrics, gate, outcome)."""
        found = _RETRAIN_LINE.findall(self._log_end())
        return found[-1].strip() if found else None

    def _log_end(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, 2)
                log.seek(max(0, size - _LOG_TAIL_BYTES))
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _pick_ports(self) -> None:
        self.metrics_port = pick_free_port()

    def _command(self) -> list[str]:
        inputs = self.inputs
        return [
            sys.executable, "-c", "from central.cli import main; main()",
            "central", "run",
            "--nats", inputs.nats_url,
            "--kafka", inputs.kafka_bootstrap,
            "--no-idempotence",  # the Tansu broker has no idempotent producer
            "--partitions", str(_PARTITIONS),
            "--signing-key", str(inputs.signing_key),
            "--regions", ",".join(inputs.regions),
            "--state-dir", str(self.workdir / "state"),
            "--lake", str(self.workdir / "lake"),
            "--min-events", str(inputs.min_events),
            "--retrain-events", str(inputs.retrain_events),
            "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        return child_environment()

    def _is_ready(self) -> bool:
        if time.monotonic() - self._probed_at < _READY_PROBE_INTERVAL_S:
            return False
        self._probed_at = time.monotonic()
        return self.is_forwarding()
