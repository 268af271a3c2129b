"""Edge nodes as child processes running ``proxima edge serve``, as an operator would.

They start without a bundle and follow their region's rollout on the bus: the first bundle
they serve is the one the trainer publishes. Each serves the demo storefront
(``devtools/storefront``) at ``/demo/``, which an edge does only when asked to.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from devtools.localservers import LOCALHOST, ServerProcess, pick_free_port

EDGE_STARTUP_TIMEOUT_S = 60.0
STOREFRONT_DIR: Final = Path(__file__).resolve().parents[1] / "storefront"  # devtools/storefront
_READY_PROBE_TIMEOUT_S = 1.0

# Settings a replay needs beyond the flags. Every shopper of the replay arrives from
# 127.0.0.1, and each session's minutes are compressed into moments, so the per-address and
# per-session rate limits, sized for real browsers behind a CDN, are widened here.
_REPLAY_SETTINGS = """\
[edge]
ip_rate = 1000000.0
ip_burst = 1000000
session_rate = 10000.0
session_burst = 10000
log_level = "warning"
shutdown_timeout_s = 5.0
bundle_cache_dir = "bundles"
"""
CHILD_ENVIRONMENT_PREFIX = "PROXIMA_"  # the demo's children take settings from flags only


@dataclass(frozen=True, slots=True)
class EdgeAddress:
    region: str
    node: str
    base_url: str

    @property
    def name(self) -> str:
        return f"{self.region}/{self.node}"


@dataclass(frozen=True, slots=True)
class EdgeInputs:
    """What every edge of the demo is started with."""

    public_key: Path
    nats_url: str
    redis_url: str
    rules: Path | None


class EdgeProcess(ServerProcess):
    """One edge node, up once ``/healthz`` answers 200; it has no bundle until the bus
    brings one (``/readyz`` answers 503 until then)."""

    display_name = "proxima-edge"

    def __init__(self, region: str, node: str, inputs: EdgeInputs, workdir: Path) -> None:
        self.region = region
        self.node = node
        self.inputs = inputs
        super().__init__(workdir, startup_timeout=EDGE_STARTUP_TIMEOUT_S, own_session=True)
        self.settings_path = workdir / "edge.toml"
        self.settings_path.write_text(_REPLAY_SETTINGS, encoding="utf-8")

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def address(self) -> EdgeAddress:
        return EdgeAddress(self.region, self.node, self.base_url)

    def _pick_ports(self) -> None:
        self.port = pick_free_port()

    def _command(self) -> list[str]:
        command = [
            sys.executable, "-c", "from central.cli import main; main()",
            "edge", "serve",
            "--config", str(self.settings_path),
            "--region", self.region,
            "--node", self.node,
            "--public-key", str(self.inputs.public_key),
            "--nats", self.inputs.nats_url,
            "--redis", self.inputs.redis_url,
            "--host", LOCALHOST,
            "--port", str(self.port),
            "--spool-dir", str(self.workdir / "spool"),
            "--storefront-dir", str(STOREFRONT_DIR),
            # The demo's ledger counts page events end to end; served records of answers
            # (for attribution, bench/outcomes.py) would be a second kind in the stream.
            "--no-log-answers",
        ]  # fmt: skip
        if self.inputs.rules is not None:
            command += ["--rules", str(self.inputs.rules)]
        return command

    def _environment(self) -> dict[str, str]:
        return child_environment()

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.base_url}/healthz", timeout=_READY_PROBE_TIMEOUT_S
            ) as response:
                ready: bool = response.status == 200
                return ready
        except (urllib.error.URLError, OSError):
            return False


def child_environment() -> dict[str, str]:
    """This process's environment without ``PROXIMA_*``: a setting the user exported for
    their own edges (an API key, a fixed port) must not change the demo's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CHILD_ENVIRONMENT_PREFIX)}


def served_version(base_url: str, timeout_s: float = 2.0) -> int | None:
    """The bundle version an edge serves (``/v1/model``); None when it serves none yet or
    does not answer."""
    try:
        response = httpx.get(f"{base_url}/v1/model", timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    bundle = response.json().get("bundle")
    version = bundle.get("version") if isinstance(bundle, dict) else None
    return version if isinstance(version, int) else None
