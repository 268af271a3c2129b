"""Recommendation ids that impressions and clicks cannot forge.

Every answer carries a ``request_id`` of the form ``r1.<nonce>.<variant><version>.<mac>``:
a random nonce, the variant (``s`` stable, ``c`` canary) and bundle version that answered,
and a truncated HMAC-SHA256 of all of them and of the session id the answer was for, keyed
with this node's secret. Telemetry counts an impression or click only when its id verifies
for the event's own session, and takes the variant and version from the verified id, so a
page can neither invent feedback for a canary nor replay another session's answers.

The secret comes from the ``feedback_secret`` / ``feedback_secret_file`` settings; all
replicas of a region should share it so feedback sent to another replica still counts.
Without one the node makes its own at start, and feedback to other replicas, or after a
restart, is accepted as events but not counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from edge_node.errors import SettingsError
from protocol.rollout import Variant

log = logging.getLogger("proxima.edge.feedback")

ID_VERSION: Final = "r1"
NONCE_BYTES: Final = 9
MAC_BYTES: Final = 16
MIN_SECRET_BYTES: Final = 16
_VARIANT_CODES: Final[dict[Variant, str]] = {"stable": "s", "canary": "c"}
_CODE_VARIANTS: Final[dict[str, Variant]] = {c: v for v, c in _VARIANT_CODES.items()}
_SHAPE: Final = re.compile(
    r"r1\.([A-Za-z0-9_-]{12})\.([sc])([1-9][0-9]{0,18})\.([A-Za-z0-9_-]{22})"
)

Unverified = Literal["malformed", "bad_mac"]


@dataclass(frozen=True, slots=True)
class IssuedAnswer:
    """What a verified request id says answered: the variant and the bundle version."""

    variant: Variant
    version: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class FeedbackIds:
    """Issues and verifies request ids with one node secret."""

    __slots__ = ("_secret", "generated")

    def __init__(self, secret: bytes, *, generated: bool = False) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the feedback secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.generated = generated  # made by this process: ids do not verify elsewhere

    @classmethod
    def per_process(cls) -> FeedbackIds:
        log.warning(
            "no feedback_secret set: request ids are signed with a secret made for this "
            "process, so impressions and clicks sent to another replica or after a restart "
            "will not verify and will not count toward CTR"
        )
        return cls(os.urandom(32), generated=True)

    def issue(self, session_id: str, variant: Variant, version: int) -> str:
        nonce = _b64(os.urandom(NONCE_BYTES))
        answer = f"{_VARIANT_CODES[variant]}{version}"
        return f"{ID_VERSION}.{nonce}.{answer}.{self._mac(nonce, answer, session_id)}"

    def verify(self, request_id: str, session_id: str) -> IssuedAnswer | Unverified:
        """The answer ``request_id`` was issued for, if it was issued to ``session_id``."""
        shape = _SHAPE.fullmatch(request_id)
        if shape is None:
            return "malformed"
        nonce, code, version, mac = shape.groups()
        expected = self._mac(nonce, code + version, session_id)
        if not hmac.compare_digest(mac, expected):
            return "bad_mac"
        return IssuedAnswer(_CODE_VARIANTS[code], int(version))

    def _mac(self, nonce: str, answer: str, session_id: str) -> str:
        # nonce and answer cannot hold ".", so the session id (last, any text) is unambiguous.
        message = f"{ID_VERSION}.{nonce}.{answer}.".encode() + session_id.encode(
            "utf-8", "surrogatepass"
        )
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest()[:MAC_BYTES])


def load_feedback_ids(secret: str | None, secret_file: Path | None) -> FeedbackIds:
    """The ids of the configured secret (setting or file), else of one made for this process.

    Raises :class:`SettingsError` for an unreadable file, both given, or a short secret.
    """
    if secret is not None and secret_file is not None:
        raise SettingsError(
            "set feedback_secret or feedback_secret_file, not both", field="feedback_secret"
        )
    if secret_file is not None:
        try:
            raw = secret_file.read_bytes().strip()
        except OSError as exc:
            raise SettingsError(
                f"cannot read feedback secret {secret_file}: {exc.strerror}",
                field="feedback_secret_file",
            ) from exc
    elif secret is not None:
        raw = secret.encode()
    else:
        return FeedbackIds.per_process()
    if len(raw) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"the feedback secret must be at least {MIN_SECRET_BYTES} bytes",
            field="feedback_secret_file" if secret_file is not None else "feedback_secret",
        )
    return FeedbackIds(raw)
