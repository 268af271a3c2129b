"""Property-based fuzzing of one real edge: whatever arrives, never a 5xx, always a JSON error.

One edge serves the whole module (with CORS, an API key and the seed rules, so those paths
are reached too) under rate limits high enough that they never answer in place of the input
handling being tested; a second edge with low limits checks that 429 answers are well formed.
The last test checks that the fuzzed edge is still healthy and never counted a 5xx.

Requests the HTTP server itself refuses before the application sees them (malformed request
lines or Content-Length values, request heads over its limit, WebSocket handshakes whose
request line is over 8 KiB) are answered by uvicorn, not by the edge: the fuzzers send
well-framed HTTP within those limits, and the raw-socket fuzzer checks the JSON form only of
answers the application gave. Two answers are not errors and carry no JSON body: a HEAD
answer (no body at all) and Starlette's 307 redirect between "/path/" and "/path".
"""

from __future__ import annotations

import json
import socket
import string
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from edge_node.app import ROUTES
from edge_node.config import EdgeSettings
from protocol.events import EVENT_TYPES, KNOWN_FIELDS
from tests.edge_node.conftest import EdgeServer, Keys
from tests.servers import pick_free_port

SEED_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules" / "seed.yaml"
API_KEY = "fuzz-api-key-0123456789"
SHOP_ORIGIN = "https://shop.example"
MAX_BODY_BYTES = 16 * 1024
UNLIMITED = 1_000_000_000
MAX_HEAD_BYTES = 12 * 1024  # well inside what the HTTP server accepts as a request head
WAIT_S = 10.0  # a guard against hanging, never an expectation

FUZZ_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- the edges ----------------------------------------------------------------------------------


def start_edge(tmp_path: Path, keys: Keys, bundle: Path, **overrides: Any) -> EdgeServer:
    values: dict[str, Any] = {
        "region": "fuzz",
        "node": f"n-{uuid.uuid4().hex[:6]}",
        "public_key": keys.public,
        "bundle": bundle,
        "rules": SEED_RULES,
        "port": pick_free_port(),
        "spool_dir": tmp_path / "spool",
        "max_body_bytes": MAX_BODY_BYTES,
        "cors_origins": (SHOP_ORIGIN,),
        "api_keys": (API_KEY,),
        **overrides,
    }
    return EdgeServer(EdgeSettings.load(overrides=values)).start()


@pytest.fixture(scope="module")
def fuzz_edge(
    tmp_path_factory: pytest.TempPathFactory, edge_keys: Keys, edge_bundle: Path
) -> Iterator[EdgeServer]:
    server = start_edge(
        tmp_path_factory.mktemp("fuzz-edge"),
        edge_keys,
        edge_bundle,
        ip_rate=UNLIMITED,
        ip_burst=UNLIMITED,
        session_rate=UNLIMITED,
        session_burst=UNLIMITED,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT_S) as client:
        yield client


# -- what every answer must look like -----------------------------------------------------------


def assert_well_formed(
    method: str, status: int, headers: httpx.Headers | dict[str, str], body: bytes
) -> None:
    assert status < 500, f"{status}: {body[:300]!r}"
    content_type = headers.get("content-type", "")
    if status < 300:
        if content_type.startswith("application/json") and method != "HEAD":
            json.loads(body)
        return
    if status < 400:
        # Starlette's redirect between "/path/" and "/path": not an error.
        assert status in (307, 308), status
        assert headers.get("location")
        return
    if status in (429, 503):
        assert int(headers["retry-after"]) >= 1
    if method == "HEAD":
        return
    assert content_type.startswith("application/json"), f"{status} {content_type}: {body[:200]!r}"
    document = json.loads(body)
    assert isinstance(document, dict) and set(document) == {"error"}, document
    error = document["error"]
    assert isinstance(error, dict)
    assert isinstance(error.get("code"), str) and error["code"], error
    assert isinstance(error.get("message"), str) and error["message"], error
    assert isinstance(error.get("field", ""), str), error


def assert_response_well_formed(response: httpx.Response) -> None:
    assert_well_formed(
        response.request.method, response.status_code, response.headers, response.content
    )


# -- strategies ---------------------------------------------------------------------------------

ROUTE_PATHS = [route.path for route in ROUTES]
KNOWN_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-"

methods = st.sampled_from(KNOWN_METHODS) | st.text(TOKEN_CHARS, min_size=1, max_size=12)
paths = st.one_of(
    st.sampled_from(ROUTE_PATHS),
    st.sampled_from(ROUTE_PATHS).map(lambda path: path + "/"),
    st.tuples(st.sampled_from(ROUTE_PATHS), st.text(max_size=20)).map(
        lambda parts: parts[0] + "/" + quote(parts[1], safe="")
    ),
    st.text(max_size=40).map(lambda text: "/" + quote(text, safe="/")),
    st.sampled_from(["/", "//", "/v1/", "/%00", "/%ff%fe", "/v1/%2e%2e/healthz", "/.."]),
)


def long_text(max_size: int) -> st.SearchStrategy[str]:
    """Text up to ``max_size`` characters made by repeating a short piece: cheap to draw, and
    it reaches the length limits that drawing character by character rarely does."""
    return st.tuples(st.text(min_size=1, max_size=3), st.integers(0, max_size)).map(
        lambda parts: (parts[0] * parts[1])[:max_size]
    )


def short_or_long_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=12) | long_text(max_size)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    short_or_long_text(300),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=10,
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True),
    "session_id": short_or_long_text(130),
    "user_id": short_or_long_text(130),
    "type": st.sampled_from(EVENT_TYPES),
    "item_id": st.sampled_from(["i001", "i002", "i089", "i334"]) | short_or_long_text(130),
    "items": st.lists(st.text(max_size=5), max_size=4)
    | st.integers(0, 102).map(lambda n: [f"i{k:03d}" for k in range(n)]),
    "request_id": short_or_long_text(130),
    "query": short_or_long_text(260),
    "category": short_or_long_text(130),
    "price": st.floats(min_value=0, max_value=1e9) | st.integers(-5, 10**20),
    "ts": st.integers(min_value=0, max_value=10**13 + 5),
    "context": st.dictionaries(short_or_long_text(66), json_scalars, max_size=4)
    | st.integers(0, 18).map(lambda n: {f"key{k}": k for k in range(n)}),
    "received_at": st.integers(min_value=-1, max_value=10**13 + 5),
    "region": short_or_long_text(66),
    "node": short_or_long_text(66),
}
REQUIRED_FIELDS = ("event_id", "session_id", "type", "ts")
event_like = st.fixed_dictionaries(
    {name: field_values[name] | json_values for name in REQUIRED_FIELDS},
    optional={
        **{
            name: field_values[name] | json_values
            for name in sorted(KNOWN_FIELDS)
            if name not in REQUIRED_FIELDS
        },
        "extra": json_values,
    },
)
events_or_values = event_like | json_values

msgpack_scalars = st.one_of(
    json_scalars,
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999)),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=8) | st.binary(max_size=8) | st.integers(), children, max_size=5
        )
    ),
    max_leaves=10,
)


def to_json(value: Any) -> bytes:
    return json.dumps(value).encode()


MSGPACK_INT_RANGE = (-(2**63), 2**64 - 1)


def msgpack_safe(value: Any) -> Any:
    """``value`` with the integers msgpack cannot carry written as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = MSGPACK_INT_RANGE
        return value if low <= value <= high else str(value)
    if isinstance(value, list):
        return [msgpack_safe(item) for item in value]
    if isinstance(value, dict):
        return {msgpack_safe(key): msgpack_safe(item) for key, item in value.items()}
    return value


def to_msgpack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(msgpack_safe(value), use_bin_type=True)
    return packed


NASTY_BODIES = [
    b'{"event_id":"\\ud800abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1}',
    b'{"event_id":"abcdefgh","session_id":"\\udfff","type":"view","item_id":"i","ts":1}',
    b'{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1,'
    b'"context":{"\\ud800":1}}',
    b'{"\\ud800":1}',
    b'{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1e400}',
    b'{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1,"price":1e999}',
    b'{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1,"price":-0.0}',
    b'{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1,"ts":2}',
    b'{"ts":' + b"9" * 5000 + b"}",
    b'{"ts":' + b"9" * 4000 + b"}",
    b"[" * 8000 + b"]" * 8000,  # too deep to parse, yet within the body limit
    b'{"a":' * 2500 + b"1" + b"}" * 2500,
    b"\x91" * 8000 + b"\x01",
    b"\xef\xbb\xbf"
    + b'{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1}',
    '{"event_id":"abcdefgh","session_id":"s","type":"view","item_id":"i","ts":1}'.encode("utf-16"),
    b"[Infinity]",
    b"[-Infinity, NaN]",
    b"\x00",
    b"\x91\xc1",
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\x81\xc4\x01k\x01",
    b"\x81\xc0\x01",
    b"\x81\x91\x01\x01",
]
small_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(NASTY_BODIES),
    st.sampled_from([b"{}", b"[]", b"null", b'{"type":"view"}', to_msgpack({"ts": 1})]),
)


def numbered_views(count: int) -> list[dict[str, Any]]:
    session = f"batch-{count}"  # the same count again: a batch of duplicates
    return [
        {
            "event_id": f"{session}-{n:06d}",
            "session_id": session,
            "type": "view",
            "item_id": f"i{n % 400:03d}",
            "ts": 1_700_000_000_000 + n,
        }
        for n in range(count)
    ]


# Valid batches of every size: within the body limit, over it, and (drawn again) duplicates.
large_batches = st.integers(1, 600).map(numbered_views)
bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(to_json),
    event_like.map(to_json),
    st.lists(events_or_values, max_size=5).map(to_json),
    event_like.map(to_msgpack),
    st.lists(events_or_values, max_size=5).map(to_msgpack),
    msgpack_values.map(to_msgpack),
    large_batches.map(to_json),
    large_batches.map(to_msgpack),
    st.sampled_from(NASTY_BODIES),
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 2 * MAX_BODY_BYTES // 8)).map(
        lambda parts: parts[0] * parts[1]
    ),
)

header_value_chars = st.characters(
    min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"
)
header_values = st.text(header_value_chars, max_size=200).map(
    lambda text: text.strip(" ").encode("latin-1")
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/msgpack",
            "application/x-msgpack",
            "text/plain",
            "text/plain;charset=UTF-8",
            "APPLICATION/JSON ; charset=utf-16",
            "application/json;;;",
            ";",
            "multipart/form-data; boundary=----x",
            "application/x-www-form-urlencoded",
            "application/*",
            "*/*",
        ]
    ),
    header_values.map(lambda value: value.decode("latin-1").strip()),
)
# Headers the HTTP client or server manage themselves (framing, connection, upgrade).
MANAGED_HEADERS = {
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "host",
    "te",
    "trailer",
    "keep-alive",
    "expect",
    "proxy-connection",
    "http2-settings",
}
header_names = st.one_of(
    st.sampled_from(
        [
            "content-type",
            "x-proxima-key",
            "authorization",
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
            "access-control-request-private-network",
            "accept",
            "accept-encoding",
            "content-encoding",
            "cookie",
            "range",
            "if-none-match",
            "x-forwarded-for",
            "user-agent",
        ]
    ),
    st.text(TOKEN_CHARS, min_size=1, max_size=40),
).filter(lambda name: name.lower() not in MANAGED_HEADERS)
special_header_values = st.one_of(
    header_values,
    st.sampled_from(
        [
            API_KEY.encode(),
            b"Bearer " + API_KEY.encode(),
            b"Bearer",
            b"bearer wrong",
            SHOP_ORIGIN.encode(),
            b"https://evil.example",
            b"null",
            b"GET",
            b"POST",
            b"DELETE",
            b"content-type, x-proxima-key",
            b"x-unknown",
            b"gzip",
            b"x" * 8000,
        ]
    ),
)
headers_lists = st.lists(st.tuples(header_names, special_header_values), max_size=8).filter(
    lambda headers: sum(len(name) + len(value) + 4 for name, value in headers) < MAX_HEAD_BYTES
)

query_keys = st.one_of(
    st.sampled_from(["session_id", "k", "slot", "ctx.device", "ctx.page", "ctx.", "ctx"]),
    st.text(max_size=10).map(lambda name: "ctx." + name),
    long_text(70).map(lambda name: "ctx." + name),
    st.text(max_size=80),
)
query_values = st.one_of(
    st.sampled_from(["", "s", "home", "checkout", "mobile", "0", "1", "20", "100", "101", "-1"]),
    st.sampled_from(["²", "١٢", "1.5", "1e3", "0x10", " 5", "9" * 5000, "\x00", "\n"]),
    st.integers().map(str),
    st.text(max_size=20),
    long_text(400),
    st.integers(0, 3000).map(lambda n: "v" * n),
)


def encode_query_pair(pair: tuple[str, str, int]) -> str:
    key, value, form = pair
    if form == 0:
        return f"{quote(key, safe='')}={quote(value, safe='')}"
    if form == 1:
        return quote(key, safe="")  # a key without "="
    if form == 2:
        return f"{quote(key, safe='')}={quote(value, safe=':/?@!$()*,;')}"
    return f"{quote(key, safe='')}={quote(value, safe='')}%z"  # a broken percent escape


query_strings = st.one_of(
    st.lists(st.tuples(query_keys, query_values, st.integers(0, 3)), max_size=20).map(
        lambda pairs: "&".join(encode_query_pair(pair) for pair in pairs)
    ),
    st.sampled_from(["&&&", "=", "==", "&=&", "%", "%zz", "%ff%fe", "session_id=%ed%a0%80", ";;"]),
).filter(lambda query: len(query) < MAX_HEAD_BYTES)


def request(
    http: httpx.Client,
    edge: EdgeServer,
    method: str,
    path: str,
    *,
    query: str = "",
    content: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> httpx.Response:
    url = httpx.URL(f"{edge.url}{path}")
    if query:
        url = url.copy_with(query=query.encode("ascii"))
    return http.request(method, url, content=content, headers=headers)


# -- HTTP fuzzing -------------------------------------------------------------------------------


@settings(FUZZ_SETTINGS, max_examples=1000)
@given(body=bodies, content_type=st.none() | content_types, with_key=st.booleans())
def test_any_body_to_the_events_route_is_answered_well(
    fuzz_edge: EdgeServer, http: httpx.Client, body: bytes, content_type: str | None, with_key: bool
) -> None:
    headers: list[tuple[str, bytes]] = []
    if content_type is not None:
        headers.append(("content-type", content_type.encode("latin-1")))
    if with_key:
        headers.append(("x-proxima-key", API_KEY.encode()))

    response = request(http, fuzz_edge, "POST", "/v1/events", content=body, headers=headers)

    assert_response_well_formed(response)
    if response.status_code == 202:
        counts = response.json()
        assert set(counts) == {"accepted", "duplicate", "rejected", "rejections"}
        for rejection in counts["rejections"]:
            assert isinstance(rejection["index"], int)
            assert isinstance(rejection["code"], str) and isinstance(rejection["message"], str)


@settings(FUZZ_SETTINGS, max_examples=500)
@given(
    method=methods,
    path=paths,
    body=st.none() | small_bodies,
    content_type=st.none() | content_types,
)
def test_any_method_path_and_body_is_answered_well(
    fuzz_edge: EdgeServer,
    http: httpx.Client,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
) -> None:
    headers = [] if content_type is None else [("content-type", content_type.encode("latin-1"))]

    response = request(http, fuzz_edge, method, path, content=body, headers=headers)

    assert_response_well_formed(response)


@settings(FUZZ_SETTINGS, max_examples=1000)
@given(
    method=st.sampled_from(["GET", "GET", "GET", "POST", "HEAD", "OPTIONS", "DELETE"]),
    path=st.sampled_from(ROUTE_PATHS),
    query=query_strings,
)
def test_any_query_string_on_every_route_is_answered_well(
    fuzz_edge: EdgeServer, http: httpx.Client, method: str, path: str, query: str
) -> None:
    response = request(
        http, fuzz_edge, method, path, query=query, content=b"" if method == "POST" else None
    )

    assert_response_well_formed(response)


@settings(FUZZ_SETTINGS, max_examples=500)
@given(
    method=st.sampled_from(KNOWN_METHODS),
    path=st.sampled_from(ROUTE_PATHS),
    headers=headers_lists,
    body=st.none() | small_bodies,
)
def test_any_headers_are_answered_well(
    fuzz_edge: EdgeServer,
    http: httpx.Client,
    method: str,
    path: str,
    headers: list[tuple[str, bytes]],
    body: bytes | None,
) -> None:
    response = request(http, fuzz_edge, method, path, content=body, headers=headers)

    assert_response_well_formed(response)


# -- raw requests: Content-Length that lies -----------------------------------------------------


def exchange(port: int, raw_request: bytes, *, body_unfinished: bool = False) -> bytes:
    """Sends a request and returns everything the server answers until it closes.

    Requests say ``Connection: close``, so the server closes after its answer. A request whose
    body is shorter than it announced would wait for the rest forever: for those the sending
    side is closed, and the server may then close without an answer.
    """
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(raw_request)
        if body_unfinished:
            sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server closed with our unread bytes still queued: what came is kept
    return bytes(received)


def first_response(raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """The first final response in ``raw``, or None when the server answered nothing."""
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            raw = rest
            continue
        length = int(headers.get("content-length", len(rest)))
        return status, headers, rest[:length]
    return None


def served_by_the_application(headers: dict[str, str]) -> bool:
    # uvicorn's own refusals of malformed HTTP carry neither a date nor a server header.
    return "date" in headers and "server" in headers


@settings(FUZZ_SETTINGS, max_examples=300)
@given(
    method=st.sampled_from(["POST", "POST", "GET", "PUT"]),
    path=st.sampled_from(ROUTE_PATHS),
    body=bodies,
    declared=st.one_of(
        st.just(-1),  # the truth
        st.integers(0, 64),
        st.integers(0, 2 * MAX_BODY_BYTES),
        st.sampled_from([MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 10**12, 10**30]),
    ),
    content_type=content_types,
)
def test_a_content_length_that_lies_is_answered_well(
    fuzz_edge: EdgeServer, method: str, path: str, body: bytes, declared: int, content_type: str
) -> None:
    length = len(body) if declared < 0 else declared
    raw_request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode("latin-1") + body

    unfinished = length > len(body)
    answer = first_response(
        exchange(fuzz_edge.settings.port, raw_request, body_unfinished=unfinished)
    )

    if answer is None:
        assert unfinished  # only an unfinished body may go unanswered
        return
    status, headers, response_body = answer
    assert status < 500, f"{status}: {response_body[:300]!r}"
    if served_by_the_application(headers):
        assert_well_formed(method, status, headers, response_body)


@pytest.mark.parametrize(
    "content_length_lines",
    [
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 1,2\r\n",
        "Content-Length: ²\r\n",
        "Content-Length: " + "9" * 5000 + "\r\n",
        "Content-Length: 2\r\nContent-Length: 3\r\n",
        "Content-Length: 0x10\r\n",
    ],
)
def test_a_malformed_content_length_is_refused_by_the_http_server(
    fuzz_edge: EdgeServer, content_length_lines: str
) -> None:
    raw_request = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: application/json\r\n"
        f"{content_length_lines}\r\n{{}}"
    ).encode("latin-1")

    answer = first_response(exchange(fuzz_edge.settings.port, raw_request))

    assert answer is not None
    assert answer[0] == 400


# -- WebSocket fuzzing --------------------------------------------------------------------------


def stream_url(edge: EdgeServer, query: str) -> str:
    return f"{edge.ws_url}/v1/stream?{query}"


def next_frame(ws: ClientConnection) -> dict[str, Any]:
    raw = ws.recv(timeout=WAIT_S)
    assert isinstance(raw, str)
    frame = json.loads(raw)
    assert isinstance(frame, dict)
    if frame["type"] == "error":
        error = frame["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    else:
        assert frame["type"] in ("recommendations", "pong"), frame
    return frame


def is_ping(frame: str | bytes) -> bool:
    if not isinstance(frame, str) or len(frame) > 4096:
        return False
    try:
        parsed = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "ping"


ws_frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["type", "session_id", "k"]), json_scalars, max_size=3).map(
        json.dumps
    ),
    st.just('{"type": "ping"}'),
    st.just('{"type": "ping", "extra": [1, 2]}'),
    st.integers(4090, 5000).map(lambda n: "x" * n),
    st.integers(4090, 70_000).map(lambda n: b"\x00" * n),
    st.just("[" * 4000),
)


@settings(FUZZ_SETTINGS, max_examples=200)
@given(frames=st.lists(ws_frames, min_size=1, max_size=12))
def test_any_websocket_frames_get_answers_and_the_stream_stays_usable(
    fuzz_edge: EdgeServer, frames: list[str | bytes]
) -> None:
    session = f"ws-fuzz-{uuid.uuid4().hex[:12]}"
    with connect(stream_url(fuzz_edge, f"session_id={session}"), open_timeout=WAIT_S) as ws:
        assert next_frame(ws)["type"] == "recommendations"
        for frame in frames:
            ws.send(frame)
            answer = next_frame(ws)
            assert answer["type"] == ("pong" if is_ping(frame) else "error"), (frame, answer)
        ws.send('{"type":"ping"}')
        assert next_frame(ws) == {"type": "pong"}


# The WebSocket handshake parser of the server refuses request lines over 8 KiB by leaving
# the connection hanging; the application never sees those, so they are not sent.
stream_query_strings = query_strings.filter(lambda query: len(query) < 7 * 1024)


@settings(FUZZ_SETTINGS, max_examples=300)
@given(query=stream_query_strings)
def test_any_stream_query_string_opens_or_closes_with_1008_like_http_answers(
    fuzz_edge: EdgeServer, http: httpx.Client, query: str
) -> None:
    over_http = request(http, fuzz_edge, "GET", "/v1/recommendations", query=query)
    assert over_http.status_code in (200, 400), over_http.text

    with connect(stream_url(fuzz_edge, query), open_timeout=WAIT_S) as ws:
        if over_http.status_code == 200:
            assert next_frame(ws)["type"] == "recommendations"
            return
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT_S)
    received = closed.value.rcvd
    assert received is not None
    assert received.code == 1008
    assert received.reason


# -- rate limits under fuzzing ------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_edge(
    tmp_path_factory: pytest.TempPathFactory, edge_keys: Keys, edge_bundle: Path
) -> Iterator[EdgeServer]:
    server = start_edge(
        tmp_path_factory.mktemp("limited-edge"),
        edge_keys,
        edge_bundle,
        # Low enough that the limits bite however slowly the requests below are made.
        ip_rate=2,
        ip_burst=40,
        session_rate=0.5,
        session_burst=2,
    )
    yield server
    server.stop()


def valid_view(session_id: str) -> bytes:
    event = {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }
    return to_json(event)


def test_rate_limited_answers_are_well_formed(limited_edge: EdgeServer, http: httpx.Client) -> None:
    statuses: Counter[int] = Counter()
    closes: Counter[int] = Counter()

    @settings(FUZZ_SETTINGS, max_examples=100)
    @given(
        calls=st.lists(
            st.tuples(
                st.sampled_from(["event", "recommend", "stream", "any"]),
                st.sampled_from(["s1", "s2", "s3"]),
                methods,
                paths,
            ),
            min_size=1,
            max_size=15,
        )
    )
    def burst(calls: list[tuple[str, str, str, str]]) -> None:
        for kind, session, method, path in calls:
            if kind == "stream":
                with connect(
                    stream_url(limited_edge, f"session_id={session}"), open_timeout=WAIT_S
                ) as ws:
                    try:
                        next_frame(ws)
                    except ConnectionClosed as exc:
                        assert exc.rcvd is not None
                        assert exc.rcvd.code == 1013
                        closes[exc.rcvd.code] += 1
                continue
            if kind == "event":
                response = request(
                    http,
                    limited_edge,
                    "POST",
                    "/v1/events",
                    content=valid_view(session),
                    headers=[("content-type", b"application/json"),
                             ("x-proxima-key", API_KEY.encode())],
                )  # fmt: skip
            elif kind == "recommend":
                response = request(
                    http, limited_edge, "GET", "/v1/recommendations", query=f"session_id={session}"
                )
            else:
                response = request(http, limited_edge, method, path)
            assert_response_well_formed(response)
            statuses[response.status_code] += 1
            if response.status_code == 429 and response.request.method != "HEAD":
                assert response.json()["error"]["code"] == "rate_limited"

    burst()

    assert statuses[429] > 0
    assert closes[1013] > 0
    registry = limited_edge.app.state.edge.metrics.registry
    for reason in ("client_rate", "session_rate"):
        assert registry.get_sample_value("proxima_edge_rejections_total", {"reason": reason})


# -- after all of it ----------------------------------------------------------------------------


def test_the_fuzzed_edge_is_still_healthy_and_never_answered_5xx(
    fuzz_edge: EdgeServer, http: httpx.Client
) -> None:
    assert fuzz_edge.thread.is_alive()
    assert http.get(f"{fuzz_edge.url}/healthz").status_code == 200
    assert http.get(f"{fuzz_edge.url}/readyz").status_code == 200
    session = f"after-fuzz-{uuid.uuid4().hex[:8]}"
    accepted = http.post(
        f"{fuzz_edge.url}/v1/events",
        content=valid_view(session),
        headers={"content-type": "application/json", "x-proxima-key": API_KEY},
    )
    assert accepted.status_code == 202
    assert accepted.json()["accepted"] == 1
    answer = http.get(f"{fuzz_edge.url}/v1/recommendations", params={"session_id": session})
    assert answer.status_code == 200
    assert answer.json()["cold"] is False
    with connect(stream_url(fuzz_edge, f"session_id={session}"), open_timeout=WAIT_S) as ws:
        assert next_frame(ws)["type"] == "recommendations"

    registry = fuzz_edge.app.state.edge.metrics.registry
    families = {family.name: family for family in registry.collect()}
    answered = [
        sample
        for sample in families["proxima_edge_requests"].samples
        if sample.name == "proxima_edge_requests_total"
    ]
    server_errors = [sample for sample in answered if sample.labels["status"].startswith("5")]
    assert server_errors == []
