"""Errors raised by the contracts.

Every error carries a stable ``code`` (machine-readable, never reworded), an HTTP
``status`` for when it reaches a client, and, where it names a field, that field.

    ProtocolError
    ├── EventError                 an event or batch breaks the event schema (400/413)
    ├── NameError_                 a region, node or bundle name is not a valid bus token
    ├── BundleError                a model bundle is unreadable or fails a check (422)
    │   ├── SignatureError         the manifest signature does not verify
    │   ├── ManifestError          the manifest is malformed or inconsistent
    │   └── PartError              a part is missing, has the wrong hash, or is malformed
    ├── KeyFileError               a signing or public key file is unusable
    └── FeatureContractError       a session window or table breaks the feature contract
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by :mod:`protocol`."""

    code: str = "protocol_error"
    status: int = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class EventError(ProtocolError):
    code = "invalid_event"
    status = 400


class NameError_(ProtocolError):
    code = "invalid_name"


class BundleError(ProtocolError):
    code = "invalid_bundle"
    status = 422


class SignatureError(BundleError):
    code = "bad_signature"


class ManifestError(BundleError):
    code = "bad_manifest"


class PartError(BundleError):
    code = "bad_part"


class KeyFileError(ProtocolError):
    code = "bad_key"


class FeatureContractError(ProtocolError):
    code = "feature_contract"
