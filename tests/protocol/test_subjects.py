from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import NameError_, ProtocolError
from protocol.subjects import (
    DUPLICATE_WINDOW_S,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    KAFKA_EVENTS_TOPIC,
    MODELS_BUCKET,
    MSG_ID_HEADER,
    ROLLOUT_BUCKET,
    RULES_BUCKET,
    bundle_object_name,
    check_token,
    events_subject,
    telemetry_subject,
)

SubjectOf = Callable[[str, str], str]
SUBJECT_BUILDERS: list[tuple[str, SubjectOf]] = [
    ("events", events_subject),
    ("telemetry", telemetry_subject),
]

TOKENS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
BAD_TOKENS = [
    "",
    "eu.west",
    ".",
    "*",
    ">",
    "eu-*",
    "eu west",
    " eu",
    "eu\t1",
    "eu\n1",
    "é",
    "eu/west",
    "r" * 65,
]


def test_names_from_the_design() -> None:
    assert EVENTS_STREAM == "EVENTS"
    assert EVENTS_SUBJECTS == "events.>"
    assert MODELS_BUCKET == "proxima-models"
    assert ROLLOUT_BUCKET == "proxima-rollout"
    assert RULES_BUCKET == "proxima-rules"
    assert KAFKA_EVENTS_TOPIC == "proxima.events"
    assert MSG_ID_HEADER == "Nats-Msg-Id"
    assert DUPLICATE_WINDOW_S >= 120


def test_subjects_for_a_region_and_node() -> None:
    assert events_subject("eu-west-1", "edge_7") == "events.eu-west-1.edge_7"
    assert telemetry_subject("us-east", "n1") == "telemetry.us-east.n1"


@pytest.mark.parametrize(("prefix", "subject_of"), SUBJECT_BUILDERS)
@given(region=TOKENS, node=TOKENS)
def test_any_valid_token_gives_a_three_token_subject(
    prefix: str, subject_of: SubjectOf, region: str, node: str
) -> None:
    assert subject_of(region, node).split(".") == [prefix, region, node]


@given(region=TOKENS, node=TOKENS)
def test_event_subjects_fall_under_the_stream_subjects(region: str, node: str) -> None:
    stream_prefix = EVENTS_SUBJECTS.removesuffix(">")
    assert events_subject(region, node).startswith(stream_prefix)


def test_token_limits_are_inclusive() -> None:
    assert check_token("r", "region") == "r"
    assert check_token("r" * 64, "region") == "r" * 64
    assert check_token("A-z_0", "node") == "A-z_0"


@pytest.mark.parametrize(("prefix", "subject_of"), SUBJECT_BUILDERS)
@pytest.mark.parametrize("bad", BAD_TOKENS)
def test_bad_region_is_refused(prefix: str, subject_of: SubjectOf, bad: str) -> None:
    with pytest.raises(NameError_) as caught:
        subject_of(bad, "node-1")
    assert caught.value.field == "region"
    assert caught.value.code == "invalid_name"


@pytest.mark.parametrize(("prefix", "subject_of"), SUBJECT_BUILDERS)
@pytest.mark.parametrize("bad", BAD_TOKENS)
def test_bad_node_is_refused(prefix: str, subject_of: SubjectOf, bad: str) -> None:
    with pytest.raises(NameError_) as caught:
        subject_of("eu-west", bad)
    assert caught.value.field == "node"


@pytest.mark.parametrize("bad", [None, 7, b"eu", ["eu"]])
def test_non_string_token_is_refused(bad: object) -> None:
    with pytest.raises(NameError_) as caught:
        check_token(bad, "region")  # type: ignore[arg-type]
    assert caught.value.field == "region"


def test_refusal_message_is_bounded() -> None:
    with pytest.raises(NameError_) as caught:
        check_token("x." * 5000, "region")
    assert len(caught.value.message) < 200


@given(version=st.integers(min_value=1, max_value=2**63 - 1))
def test_bundle_object_name(version: int) -> None:
    assert bundle_object_name(version) == f"bundle-{version}"


@pytest.mark.parametrize("bad", [0, -1, True, False, 1.0, "3", None])
def test_bad_bundle_version_is_refused(bad: object) -> None:
    with pytest.raises(NameError_) as caught:
        bundle_object_name(bad)  # type: ignore[arg-type]
    assert caught.value.field == "version"


def test_name_error_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        events_subject("a.b", "c")
