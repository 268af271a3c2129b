"""A real catalog service (uvicorn + its NATS connection) on a private nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from central.catalog.service import CatalogService
from central.catalog.settings import CatalogSettings
from tests.servers import NatsServer

TOKEN = "t0ken-for-the-catalog-tests"
SECRET = "webhook-secret-of-the-tests"


@dataclass
class Catalog:
    service: CatalogService
    http: httpx.AsyncClient
    nats_url: str


@pytest.fixture
async def catalog(nats_server: NatsServer) -> AsyncIterator[Catalog]:
    settings = CatalogSettings(
        nats_url=nats_server.url,
        catalog_port=0,
        catalog_token=TOKEN,
        webhook_secret=SECRET,
        catalog_max_body_bytes=1 << 20,
    )
    service = CatalogService(settings)
    await service.start()
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10) as http:
        yield Catalog(service, http, nats_server.url)
    await service.close()
