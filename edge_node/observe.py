"""The edge's one observation path: components record what they did here, once.

An :class:`Observer` feeds both places an edge reports to from every call:

* the Prometheus series of :class:`~edge_node.metrics.EdgeMetrics` (``GET /metrics``
  renders ``observer.metrics.registry``), and
* the interval in progress of :class:`~edge_node.telemetry.TelemetryRecorder` (the
  telemetry publisher takes ``observer.telemetry`` every ``telemetry_interval_s``).

The recommender, the events route and the request middleware call it on the hot path, so it
does no more than the two recordings did before: the labelled Prometheus children are
looked up once here, not per request, and nothing is allocated per call beyond what
``prometheus_client`` and the telemetry histograms do themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from edge_node.feedback import IssuedAnswer
from edge_node.metrics import EdgeMetrics
from edge_node.telemetry import TelemetryRecorder
from protocol.rollout import Variant
from protocol.telemetry import VARIANTS

FEEDBACK_TYPES = ("impression", "click")
FEEDBACK_REJECTIONS = ("malformed", "bad_mac", "other_version")


class Observer:
    """What this edge answered and accepted, into Prometheus and telemetry at once.

    Not thread-safe beyond what its two sinks are: the event loop feeds it.
    """

    __slots__ = (
        "_answers",
        "_feedback",
        "_feedback_rejected",
        "_rejected",
        "_requests",
        "_stages",
        "_variant_answers",
        "_variant_errors",
        "metrics",
        "telemetry",
    )

    def __init__(
        self,
        region: str,
        node: str,
        *,
        metrics: EdgeMetrics | None = None,
        telemetry: TelemetryRecorder | None = None,
    ) -> None:
        self.metrics = metrics or EdgeMetrics(region, node)
        self.telemetry = telemetry or TelemetryRecorder()
        m = self.metrics
        # Prometheus has no "request" stage (it is what the client measures; only telemetry
        # carries it): stage() records those in telemetry alone.
        self._stages = dict(m.stage)
        self._answers = {
            False: m.recommendations.labels("ranked"),
            True: m.recommendations.labels("cold"),
        }
        self._variant_answers = {v: m.variant_answers.labels(v) for v in VARIANTS}
        self._variant_errors = {v: m.variant_errors.labels(v) for v in (*VARIANTS, "shadow")}
        self._feedback = {
            (v, kind): m.feedback.labels(v, kind) for v in VARIANTS for kind in FEEDBACK_TYPES
        }
        self._feedback_rejected = {
            (kind, reason): m.feedback_rejected.labels(kind, reason)
            for kind in FEEDBACK_TYPES
            for reason in FEEDBACK_REJECTIONS
        }
        self._rejected: dict[str, Counter] = {}
        self._requests: dict[tuple[str, int], Counter] = {}

    # -- answering --------------------------------------------------------------------------

    def stage(self, name: str, seconds: float) -> None:
        """One stage of an answer (``window``, ``candidates``, ``features``, ``inference``,
        ``rules``; ``request`` as the middleware times it)."""
        histogram = self._stages.get(name)
        if histogram is not None:
            histogram.observe(seconds)
        self.telemetry.stage(name, seconds)

    def answered(
        self, variant: Variant, version: int, seconds: float, *, cold: bool, fired: Sequence[str]
    ) -> None:
        """An answer given: its total time, the variant and bundle that gave it, the rules
        that fired in it."""
        self._stages["total"].observe(seconds)
        telemetry = self.telemetry
        telemetry.stage("total", seconds)
        telemetry.answered(variant, version, seconds)
        self._variant_answers[variant].inc()
        self._answers[cold].inc()
        if fired:
            rules_fired = self.metrics.rules_fired
            for rule in fired:
                rules_fired.labels(rule).inc()

    def failed(self, variant: Variant, version: int) -> None:
        """A ranking that raised (a failed canary then falls back to stable)."""
        self.telemetry.failed(variant, version)
        self._variant_errors[variant].inc()

    def shadow_scored(self, version: int, overlap: float, seconds: float) -> None:
        self.telemetry.shadow_scored(version, overlap, seconds)
        self.metrics.shadow_overlap.observe(overlap)

    def shadow_failed(self, version: int) -> None:
        self.telemetry.shadow_failed(version)
        self._variant_errors["shadow"].inc()

    # -- requests and events ----------------------------------------------------------------

    def http(self, route: str, status: int) -> None:
        """An HTTP answer; ``route`` is one of the app's fixed paths or ``other``."""
        key = (route, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.requests.labels(route, str(status))
        counter.inc()
        self.telemetry.http(status)

    def rejected(self, reason: str) -> None:
        """A request or event refused before any work (``session_rate``, ``uplink`` ...)."""
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = self.metrics.rejected.labels(reason)
        counter.inc()

    def events(self, accepted: int, duplicate: int, rejected: int) -> None:
        """The outcome of one ``POST /v1/events``."""
        self.telemetry.counted_events(accepted, duplicate, rejected)
        m = self.metrics
        m.events_accepted.inc(accepted)
        m.events_duplicate.inc(duplicate)
        m.events_rejected.inc(rejected)

    def feedback(self, event_type: str, issued: IssuedAnswer) -> None:
        """An impression or click whose request id verified for its session, counted for
        the variant the id names; events of other types are left out."""
        variant = issued.variant
        counter = self._feedback.get((variant, event_type))
        if counter is None:
            return
        if not self.telemetry.variant_feedback(variant, event_type, issued.version):
            self.feedback_rejected(event_type, "other_version")  # the variant moved on
            return
        counter.inc()

    def feedback_rejected(self, event_type: str, reason: str) -> None:
        """An impression or click whose request id did not verify for its session: the
        event is kept, but it does not count toward any variant's CTR."""
        counter = self._feedback_rejected.get((event_type, reason))
        if counter is not None:
            counter.inc()
