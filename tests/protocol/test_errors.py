"""One error root for the product: ProximaError, its error bodies, and the CLI's one catch."""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import protocol.errors
from central.cli.errors import reported_errors
from central.errors import CentralError, DataFormatError
from central.monitor.errors import MonitorError, MonitorQueryError
from devtools.demo.errors import DemoError
from devtools.errors import DevtoolsError
from devtools.localservers import ServerBinaryNotFoundError, ServerStartupError
from edge_node.errors import BadRequest, EdgeError, RateLimited
from edge_node.rules.errors import RulesError
from edge_node.streams import TooManyStreams
from edge_node.uplink.acks import AckError, AckTimeoutError
from edge_node.uplink.errors import UplinkError, UplinkOverloadedError
from edge_node.uplink.publisher import PublishAckTimeoutError, PublisherError
from model_export.errors import ModelExportError
from protocol.errors import BundleError, ProtocolError, ProximaError

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "runtime", "edge_node", "central", "model_export", "devtools")


@pytest.mark.parametrize(
    "root",
    [
        ProtocolError,
        CentralError,
        MonitorError,
        EdgeError,
        TooManyStreams,
        RulesError,
        UplinkError,
        AckError,
        PublisherError,
        ModelExportError,
        DevtoolsError,
        ServerBinaryNotFoundError,
        ServerStartupError,
        DemoError,
    ],
)
def test_every_package_root_is_a_proxima_error(root: type[Exception]) -> None:
    assert issubclass(root, ProximaError)


def test_to_dict_names_code_message_and_field_only_when_given() -> None:
    assert ProximaError("it broke").to_dict() == {"code": "proxima_error", "message": "it broke"}
    error = ProtocolError("not a number", code="bad_limit", field="limit")
    assert error.to_dict() == {"code": "bad_limit", "message": "not a number", "field": "limit"}
    assert ProtocolError.code == "protocol_error"  # the instance's code, not the class's


def test_status_is_a_class_default() -> None:
    assert (ProximaError.status, ProtocolError.status, BundleError.status) == (500, 400, 422)
    assert (BadRequest.status, RateLimited.status, TooManyStreams.status) == (400, 429, 429)
    assert (MonitorQueryError.status, UplinkOverloadedError.status) == (400, 503)


def test_body_is_the_error_object_under_error() -> None:
    body = BadRequest("limit must be at most 5", field="limit").body()
    assert (
        body
        == b'{"error":{"code":"bad_request","message":"limit must be at most 5","field":"limit"}}'
    )
    assert json.loads(CentralError("no").body()) == {
        "error": {"code": "central_error", "message": "no"}
    }


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [(None, {}), (0.2, {"retry-after": "1"}), (2.6, {"retry-after": "3"})],
)
def test_headers_carry_retry_after_in_whole_seconds(
    retry_after_s: float | None, expected: dict[str, str]
) -> None:
    assert ProximaError("later", retry_after_s=retry_after_s).headers() == expected


def test_uplink_errors_answered_to_clients_carry_retry_after() -> None:
    error = UplinkOverloadedError("the event spool is full", retry_after_s=2.0)
    assert (error.status, error.headers()) == (503, {"retry-after": "2"})


def test_rules_error_names_its_path_as_path() -> None:
    error = RulesError("must be positive", code="bad_value", path="rules[0].then[0].limit")
    assert error.field == "rules[0].then[0].limit"
    assert str(error) == "rules[0].then[0].limit: must be positive"
    expected = {
        "code": "bad_value",
        "message": "must be positive",
        "path": "rules[0].then[0].limit",
    }
    assert error.to_dict() == expected
    assert json.loads(error.body()) == {"error": expected}
    whole = RulesError("not UTF-8", code="bad_encoding")
    assert (whole.field, str(whole), whole.to_dict()) == (
        None,
        "not UTF-8",
        {"code": "bad_encoding", "message": "not UTF-8"},
    )


def test_the_two_ack_timeouts_are_different_classes() -> None:
    assert AckTimeoutError.__name__ != PublishAckTimeoutError.__name__
    assert not issubclass(PublishAckTimeoutError, AckTimeoutError)
    assert issubclass(PublishAckTimeoutError, UplinkError)
    assert PublishAckTimeoutError("late").code == "ack_timeout"


# -- the CLI ---------------------------------------------------------------------------------


def run_raising(error: BaseException) -> Result:
    @click.command()
    def fails() -> None:
        with reported_errors():
            raise error

    return CliRunner().invoke(fails, [])


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            ProtocolError("bad region", code="invalid_name", field="region"),
            "bad region (region) [invalid_name]",
        ),
        (
            BadRequest("limit must be a number", field="limit"),
            "limit must be a number (limit) [bad_request]",
        ),
        (
            TooManyStreams("s-1"),
            "too many streams for session 's-1' (session_id) [too_many_streams]",
        ),
        (
            RulesError("unknown key", code="unknown_key", path="rules[2].when"),
            "unknown key (rules[2].when) [unknown_key]",
        ),
        (
            UplinkError("the spool is closed", code="spool_closed"),
            "the spool is closed [spool_closed]",
        ),
        (AckError("JetStream refused a message"), "JetStream refused a message [ack_refused]"),
        (CentralError("nothing to train on"), "nothing to train on [central_error]"),
        (DataFormatError("not JSON", path="log.jsonl", line=3), "log.jsonl:3: not JSON [bad_data]"),
        (
            MonitorQueryError("unknown stage", field="stage"),
            "unknown stage (stage) [bad_monitor_query]",
        ),
        (ModelExportError("no ONNX form"), "no ONNX form [model_export_error]"),
        (
            ServerBinaryNotFoundError("nats-server is not installed"),
            "nats-server is not installed [server_not_installed]",
        ),
        (DemoError("edge eu exited"), "edge eu exited [demo_failed]"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_cli_reports_any_proxima_error_in_one_line(error: ProximaError, line: str) -> None:
    result = run_raising(error)
    assert result.exit_code == 1
    assert result.stderr == f"error: {line}\n"


def test_cli_reports_os_errors_with_the_file() -> None:
    result = run_raising(FileNotFoundError(2, "No such file or directory", "events.jsonl"))
    assert result.exit_code == 1
    assert result.stderr == "error: No such file or directory events.jsonl\n"


def test_cli_does_not_hide_a_bug_as_an_error_message() -> None:
    result = run_raising(ValueError("a bug"))
    assert isinstance(result.exception, ValueError)
    assert "error:" not in result.stderr


# -- the whole product's exception classes, read from the source -------------------------------


@dataclass(frozen=True)
class ClassDef:
    module: str
    name: str
    bases: tuple[str, ...]  # dotted, with the module's import aliases resolved
    line: int


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):  # Generic[T]
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _imported_names(tree: ast.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is not None:
                    names[alias.asname] = alias.name
    return names


def product_classes() -> Iterator[ClassDef]:
    for package in PACKAGES:
        for path in sorted((REPOSITORY / package).rglob("*.py")):
            parts = path.relative_to(REPOSITORY).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            imported = _imported_names(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = []
                for base in node.bases:
                    dotted = _dotted(base)
                    if dotted is not None:
                        head, _, rest = dotted.partition(".")
                        resolved = imported.get(head, head)
                        bases.append(f"{resolved}.{rest}" if rest else resolved)
                yield ClassDef(module, node.name, tuple(bases), node.lineno)


class Catalog:
    """The product's classes by name; a base outside the product is imported to be checked."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[ClassDef]] = defaultdict(list)
        for found in product_classes():
            self.by_name[found.name].append(found)

    def _bases(self, cls: ClassDef) -> Iterator[ClassDef | type]:
        for base in cls.bases:
            head, _, _ = base.partition(".")
            name = base.rpartition(".")[2]
            if head in PACKAGES or ("." not in base and name in self.by_name):
                yield from self.by_name.get(name, [])
            elif "." not in base:
                yield getattr(builtins, base)
            else:
                module, _, attribute = base.rpartition(".")
                yield getattr(importlib.import_module(module), attribute)

    def inherits(self, cls: ClassDef, outside: type) -> bool:
        """Whether ``cls`` is a subclass of ``outside``, a class from outside the product."""
        return any(
            self.inherits(base, outside)
            if isinstance(base, ClassDef)
            else isinstance(base, type) and issubclass(base, outside)
            for base in self._bases(cls)
        )

    def is_exception(self, cls: ClassDef) -> bool:
        return self.inherits(cls, BaseException)

    def descends_from(self, cls: ClassDef, ancestor: str) -> bool:
        return any(
            isinstance(base, ClassDef)
            and (base.name == ancestor or self.descends_from(base, ancestor))
            for base in self._bases(cls)
        )

    def exceptions(self) -> list[ClassDef]:
        return [
            cls for classes in self.by_name.values() for cls in classes if self.is_exception(cls)
        ]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog()


def test_the_catalog_finds_the_product_errors(catalog: Catalog) -> None:
    names = {cls.name for cls in catalog.exceptions()}
    assert {"ProximaError", "EventError", "SpoolFullError", "CommandError"} <= names
    assert "StopRequested" in names  # a BaseException
    assert "Subscription" not in names


def test_no_two_exception_classes_share_a_name(catalog: Catalog) -> None:
    places: dict[str, list[str]] = defaultdict(list)
    for cls in catalog.exceptions():
        places[cls.name].append(f"{cls.module}:{cls.line}")
    assert {name: where for name, where in places.items() if len(where) > 1} == {}


def test_every_public_exception_is_a_proxima_error(catalog: Catalog) -> None:
    """Except how a CLI reports (click's exceptions) and what is no error (a BaseException
    such as a signal's arrival)."""
    strays = [
        f"{cls.module}.{cls.name}"
        for cls in catalog.exceptions()
        if not cls.name.startswith("_")
        and cls.name != "ProximaError"
        and catalog.inherits(cls, Exception)
        and not catalog.inherits(cls, click.ClickException)
        and not catalog.descends_from(cls, "ProximaError")
    ]
    assert strays == []


def test_the_tree_in_protocol_errors_draws_every_error(catalog: Catalog) -> None:
    tree = protocol.errors.__doc__ or ""
    missing = [
        f"{cls.module}.{cls.name}"
        for cls in catalog.exceptions()
        if catalog.descends_from(cls, "ProximaError") and not re.search(rf"\b{cls.name}\b", tree)
    ]
    assert missing == []
