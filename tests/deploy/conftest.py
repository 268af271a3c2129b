"""Deploy fixtures: the manifests as parsed data, an edge started from them, a region's bus.

An edge "started from the manifests" gets exactly the environment its container would: the
image's ``ENV``, the ConfigMap, the Deployment's ``env`` (the node name from the pod name,
the NATS user from the Secret). Only what cannot exist on a test machine is moved: its port
becomes a free one, every absolute path it reads or writes is re-rooted under the test's
directory (a real public key is written where the Secret would be mounted), and its NATS
URL is pointed at the test's leaf node when there is one.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamInfo

from central.bridge_jetstream import ensure_stream
from central.keys import write_keypair
from edge_node.config import EdgeSettings
from protocol.subjects import DUPLICATE_WINDOW_S, EVENTS_STREAM, EVENTS_SUBJECTS
from tests.deploy import manifests
from tests.deploy.nats_topology import Credentials, RegionBus, start_region_bus
from tests.edge_node.conftest import EdgeServer
from tests.servers import pick_free_port

POD_NAME = "proxima-edge-7c9d6b5f4-x2x4z"

EdgeFromEnv = Callable[..., EdgeServer]


@pytest.fixture(scope="session")
def dockerfile_stages() -> list[manifests.Stage]:
    return manifests.parse_dockerfile(manifests.DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def image_env(dockerfile_stages: list[manifests.Stage]) -> dict[str, str]:
    """The runtime image's environment."""
    return manifests.stage_env(dockerfile_stages[-1])


@pytest.fixture(scope="session")
def k8s() -> list[dict[str, Any]]:
    return manifests.k8s_resources()


@pytest.fixture(scope="session")
def deployment(k8s: list[dict[str, Any]]) -> dict[str, Any]:
    return manifests.find_resource(k8s, "Deployment")


@pytest.fixture(scope="session")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return manifests.edge_container(deployment)


@pytest.fixture(scope="session")
def pod_env(
    k8s: list[dict[str, Any]], container: dict[str, Any], image_env: dict[str, str]
) -> dict[str, str]:
    """The edge container's environment in a pod named :data:`POD_NAME`."""
    return manifests.container_env(k8s, container, image_env=image_env, pod_name=POD_NAME)


@pytest.fixture(scope="session")
def pod_settings(pod_env: dict[str, str]) -> EdgeSettings:
    """The settings the edge in the pod runs with, through the real loader."""
    return manifests.load_edge_settings(env=pod_env)


def rerooted(env: Mapping[str, str], root: Path) -> dict[str, str]:
    """``env`` with every path setting moved under ``root`` and a free port."""
    names = manifests.settings_env_names()
    hints = typing.get_type_hints(EdgeSettings)
    moved = dict(env)
    for variable, value in env.items():
        field = names.get(variable)
        if field is None or Path not in (hints[field], *typing.get_args(hints[field])):
            continue
        if not value.startswith("/"):
            raise AssertionError(f"{variable}={value}: deployed paths should be absolute")
        moved[variable] = str(root / value.lstrip("/"))
    moved["PROXIMA_PORT"] = str(pick_free_port())
    return moved


@pytest.fixture
def edge_from_env(tmp_path: Path) -> Iterator[EdgeFromEnv]:
    """``edge_from_env(env, nats_url=None)`` starts an edge as a container with ``env`` would
    run; the public key named by ``PROXIMA_PUBLIC_KEY`` is generated in place."""
    started: list[EdgeServer] = []

    def start(env: Mapping[str, str], *, nats_url: str | None = None) -> EdgeServer:
        root = tmp_path / f"root-{len(started)}"
        moved = rerooted(env, root)
        if nats_url is not None:
            moved["PROXIMA_NATS_URL"] = nats_url
        settings = manifests.load_edge_settings(env=moved)
        settings.public_key.parent.mkdir(parents=True, exist_ok=True)
        _, public = write_keypair(settings.public_key.parent)
        if public != settings.public_key:
            public.rename(settings.public_key)
        server = EdgeServer(settings).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def region_bus(
    tmp_path_factory: pytest.TempPathFactory, pod_env: dict[str, str]
) -> Iterator[RegionBus]:
    """The central cluster (central.conf) and a leaf node (leaf-edge.conf) that accepts the
    NATS user and password the edge's Secret holds."""
    edge_user = Credentials(pod_env["PROXIMA_NATS_USER"], pod_env["PROXIMA_NATS_PASSWORD"])
    yield from start_region_bus(tmp_path_factory.mktemp("region-bus"), edge_user)


EVENTS_REPLICAS = 3
EVENTS_MAX_AGE_S = 72 * 3600.0


@pytest.fixture(scope="module")
def events_stream(region_bus: RegionBus) -> StreamInfo:
    """EVENTS as deploy/edge/README.md has it made on the central cluster (three replicas,
    a retention limit), then passed through the bridge's own ``ensure_stream``."""

    async def create() -> StreamInfo:
        client = await nats.connect(region_bus.central_urls, connect_timeout=5)
        try:
            js = client.jetstream()
            await js.add_stream(
                StreamConfig(
                    name=EVENTS_STREAM,
                    subjects=[EVENTS_SUBJECTS],
                    storage=StorageType.FILE,
                    retention=RetentionPolicy.LIMITS,
                    duplicate_window=DUPLICATE_WINDOW_S,
                    num_replicas=EVENTS_REPLICAS,
                    max_age=EVENTS_MAX_AGE_S,
                )
            )
            return await ensure_stream(js, EVENTS_STREAM, [EVENTS_SUBJECTS])
        finally:
            await client.close()

    return asyncio.run(create())
