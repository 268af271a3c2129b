"""Who steered a rollout: the operator identity kept in every plan decision and audit entry.

The identity comes from the credential the command connects to NATS with, since that is what
the bus itself checked: the user of the URL (``nats://alice:…@host``) or of the user/password
settings, or the ``name`` of the user JWT in a ``.creds`` file. A token names no one; then
the ``--operator`` flag names the operator, or else the operating-system user, and the
record says so (``via``), since neither was checked by anyone. The controller's own
decisions are the :data:`CONTROLLER`'s.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.errors import CentralError
from runtime.nats import NatsSettings

Via = Literal["nats-user", "nats-creds", "flag", "os-user", "service"]
VERIFIED: Final = frozenset({"nats-user", "nats-creds"})
_MAX_NAME: Final = 128
_JWT_BEGIN: Final = "-----BEGIN NATS USER JWT-----"


class OperatorError(CentralError):
    """The operator's identity cannot be read from the credential given."""

    code = "unknown_operator"
    status = 400


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    via: Via

    @property
    def verified(self) -> bool:
        """Whether the name is the one the bus authenticated (not a claim)."""
        return self.via in VERIFIED

    def label(self) -> str:
        return label(self.name, self.via)


def label(name: str, via: str) -> str:
    """How a record names its writer: the name, marked when nobody checked it."""
    if via in VERIFIED or via == "service":
        return name
    return f"{name} ({via}, unverified)"


CONTROLLER: Final = Operator("controller", "service")
TRAINER: Final = Operator("trainer", "service")  # what the trainer's releases are done as


def operator_of(nats: NatsSettings, *, claimed: str | None = None) -> Operator:
    """The operator ``nats`` authenticates as; ``claimed``, or the OS user, when it names none."""
    if nats.user is not None:
        return Operator(_clean(nats.user), "nats-user")
    for server in nats.servers:
        user = urlsplit(server).username
        if user:
            return Operator(_clean(unquote(user)), "nats-user")
    if nats.credentials is not None:
        return Operator(_clean(creds_user(nats.credentials)), "nats-creds")
    if claimed:
        return Operator(_clean(claimed), "flag")
    try:
        return Operator(_clean(getpass.getuser()), "os-user")
    except (OSError, KeyError) as exc:  # no login name and no passwd entry
        raise OperatorError("no operator identity: pass --operator NAME") from exc


def creds_user(path: Path) -> str:
    """The user named by the JWT of a ``.creds`` file (its ``name``, else its subject)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(f"cannot read the credentials file {path}: {exc}") from exc
    try:
        token = lines[lines.index(_JWT_BEGIN) + 1].strip()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, IndexError, binascii.Error) as exc:
        raise OperatorError(f"{path} holds no readable NATS user JWT") from exc
    name = claims.get("name") or claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(name, str) or not name:
        raise OperatorError(f"the user JWT in {path} names no user")
    return name


def _clean(name: str) -> str:
    printable = "".join(c for c in name if c.isprintable()).strip()
    if not printable:
        raise OperatorError("the operator's name is empty")
    return printable[:_MAX_NAME]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who writes a rollout change, and the key the edge records are signed with (if any)."""

    operator: Operator
    signer: Ed25519PrivateKey | None = None


AUTOMATIC: Final = Actor(CONTROLLER)
