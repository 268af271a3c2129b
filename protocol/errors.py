"""The one error root of the product, and the errors raised by the contracts.

Every error Proxima raises on purpose is a :class:`ProximaError`: it carries a ``message``
for people, a stable ``code`` (machine-readable, never reworded), the ``field`` it names if
it names one, the HTTP ``status`` it is answered with when it reaches a client, and, when
the client should try again later, ``retry_after_s``. ``to_dict()`` is the error object of
DESIGN §2 (``{"code", "message", "field"?}``), ``body()`` the whole HTTP error body
(``{"error": {...}}``) and ``headers()`` its ``Retry-After``. The CLI prints any of them as
``error: message (field) [code]``.

The whole tree, with each class's status and the module it lives in::

    ProximaError                      500  protocol.errors: the root
    ├── ProtocolError                 400  protocol.errors: a value breaks a contract
    │   ├── EventError                400  an event or batch breaks the event schema
    │   ├── NameError_                400  a region, node or bundle name is not a bus token
    │   ├── BundleError               422  a model bundle is unreadable or fails a check
    │   │   ├── SignatureError        422  the manifest signature does not verify
    │   │   ├── ManifestError         422  the manifest is malformed or inconsistent
    │   │   └── PartError             422  a part is missing, has the wrong hash, is malformed
    │   ├── KeyFileError              400  a signing or public key file is unusable
    │   ├── FeatureContractError      400  a session window or table breaks the contract
    │   ├── TelemetryError            400  protocol.telemetry: a telemetry record is malformed
    │   ├── RolloutError              400  protocol.rollout: a rollout record is malformed
    │   ├── ExplorationError          400  protocol.exploration: a policy is out of range
    │   ├── CatalogError              400  protocol.catalog: an item breaks the catalog contract
    │   ├── BusSettingsError          400  runtime.nats: NATS settings out of range
    │   └── BackoffSettingsError      400  runtime.backoff: backoff settings out of range
    ├── SettingsError                 400  runtime.settings: a setting or settings file is bad
    ├── ServiceStateError             503  runtime.service: a service started twice or closed
    ├── RegistryError                 503  runtime.registry: a bundle or rollout record failed
    │   ├── BundleNotFoundError       404  no such bundle on the bus
    │   └── BundleTooLargeError       413  its recorded size (or its download) is over the limit
    ├── EdgeError                     500  edge_node.errors: what the edge answers with
    │   ├── BadRequest                400  a parameter or body is malformed
    │   ├── Unauthorized              401  a required API key is missing or wrong
    │   ├── NotFound                  404
    │   ├── PayloadTooLarge           413
    │   ├── UnsupportedMediaType      415
    │   ├── RateLimited               429  with Retry-After
    │   ├── Overloaded                503  with Retry-After
    │   ├── NotReady                  503  no verified bundle loaded yet
    │   ├── RequestTimeout            408  edge_node.body: a request body came too late or slow
    │   ├── OriginNotAllowed          403  edge_node.middleware.site_keys: a site key, wrong origin
    │   ├── HeaderTimeout             408  edge_node.middleware.connections: headers too late
    │   ├── HeadersTooLarge           431  edge_node.middleware.connections
    │   └── TooManyStreams            429  edge_node.streams: a session's streams are capped
    ├── RulesError                    400  edge_node.rules.errors: a rules document is invalid
    ├── UplinkError                   500  edge_node.uplink.errors: the event uplink and spool
    │   ├── SpoolError                500  the on-disk spool cannot do what was asked
    │   │   ├── SpoolFullError        500
    │   │   ├── RecordTooLargeError   500
    │   │   ├── SpoolLockedError      500
    │   │   ├── SpoolClosedError      500
    │   │   └── SpoolIOError          500
    │   ├── UplinkOverloadedError     503  with Retry-After
    │   ├── UplinkUnavailableError    503  with Retry-After
    │   ├── AckError                  500  edge_node.uplink.acks: JetStream refused a message
    │   │   ├── NoStreamError         500  no stream takes the subject
    │   │   ├── AckTimeoutError       500  a batch's acknowledgements are missing in time
    │   │   ├── ConnectionLostError   500  the connection went with acknowledgements pending
    │   │   └── RecordsRefusedError   500  JetStream refused some records and stored the rest
    │   └── PublisherError            500  edge_node.uplink.publisher
    │       └── PublishFailedError    500  a batch was not fully acknowledged; sent again
    │           └── PublishAckTimeoutError  500  ... because its acknowledgements timed out
    ├── CentralError                  500  central.errors: central services and the CLI
    │   ├── DataFormatError           400  an input event log is malformed (file and line)
    │   ├── SplitError                400  the evaluation split leaves nothing to use
    │   ├── TrainingError             500  training could not produce a model
    │   ├── KafkaSettingsError        500  central.kafka_settings
    │   ├── KafkaTopicError           500  central.kafka_settings
    │   ├── RolloutPlanError          500  central.rollout.plan: a plan breaks a rule
    │   │   ├── PlanConflictError     500  central.rollout.store: the plan kept changing
    │   │   └── OffPolicyGateError    409  central.rollout.offpolicy_gate: candidate worse
    │   ├── OperatorError             400  central.rollout.operator: no operator identity
    │   ├── BridgeError               500  central.bridge
    │   │   ├── BridgeSettingsError   500
    │   │   └── IdempotenceUnsupportedError  500
    │   ├── ConsumerUnavailableError  500  central.bridge_jetstream
    │   ├── OutcomesError             400  central.outcomes.errors: outcome figures
    │   │   └── LoggedDataError       422  logged answers are malformed
    │   ├── LakeError                 400  central.lake.errors: the event lake
    │   │   ├── LakeSchemaError       422  a file is not of this schema version
    │   │   ├── LakeCorruptError      422  a file or manifest is torn or unreadable
    │   │   └── LakeNotFoundError     404  the lake root does not exist
    │   ├── EngineError               400  central.training.errors: a query engine fails
    │   │   └── EngineUnavailableError  400  the engine --engine names is not installed
    │   ├── CatalogServiceError       500  central.catalog.errors: the catalog feed
    │   │   ├── CatalogAuthError      401  the bearer token is missing or wrong
    │   │   ├── WebhookSignatureError 401  a webhook's signature or timestamp fails
    │   │   ├── CatalogBodyError      400  the body is not JSON or NDJSON of changes
    │   │   ├── ItemNotFoundError     404  a change names an item the catalog lacks
    │   │   ├── CatalogConflictError  409  an item kept changing under the write
    │   │   ├── BodyTooLargeError     413  the body is larger than the limit
    │   │   ├── CatalogMediaTypeError 415  the body is neither JSON nor NDJSON
    │   │   └── CatalogUnavailableError  503  the catalog bucket cannot be reached
    │   └── MonitorError              500  central.monitor.errors: the latency monitor
    │       ├── MonitorQueryError     400  a query is malformed or names something unknown
    │       ├── MonitorSettingsError  400  monitor settings out of range, or port taken
    │       └── MonitorReplyError     502  central.monitor.client: a bad monitor answer
    ├── ModelExportError              500  model_export.errors: ranker to ONNX files
    │   ├── ConversionError           500  the model has no ONNX form here
    │   ├── QuantizationError         500  quantizing failed or changed the interface
    │   └── GateError                 500  a gate cannot be evaluated on its inputs
    └── DevtoolsError                 500  devtools.errors: local tooling
        ├── ServerBinaryNotFoundError 500  devtools.localservers: a server is not installed
        ├── ServerStartupError        500  devtools.localservers: a server did not start
        └── DemoError                 500  devtools.demo.errors: a demo step failed
            └── DemoInterrupted       500  stopped before the edges were serving

Third-party errors are converted where they enter, with ``raise ... from exc``.
"""

from __future__ import annotations

import json
from typing import ClassVar


class ProximaError(Exception):
    """Root of every error the product raises on purpose."""

    code: str = "proxima_error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, str]:
        """The error object of an HTTP error body: ``{"code", "message", "field"?}``."""
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error

    def body(self) -> bytes:
        """The HTTP error body, ``{"error": {...}}``, as compact JSON."""
        return json.dumps({"error": self.to_dict()}, separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (at least 1) when the client should try again."""
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after_s)))}


class ProtocolError(ProximaError):
    """Root of every error raised by :mod:`protocol`."""

    code = "protocol_error"
    status = 400


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
