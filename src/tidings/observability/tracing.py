"""OpenTelemetry traces, from the unit of work to the last handler (docs/tracing.md).

Only ``opentelemetry-api`` is used (``pip install 'tidings[tracing]'``); which SDK,
sampler and exporter run is the application's choice. Until an SDK's tracer provider is
set as the global one, nothing here builds a span: every function returns at once, and a
message's ``traceparent`` is handed on unchanged. Without the API installed it is never
imported, and the same holds.

The W3C trace context is stored with each event (its metadata's ``traceparent`` and
``tracestate``, the CloudEvent's distributed-tracing extension on the wire): the context
the event was recorded in, written once and never rewritten, so a message sent again is
the same message. Every span that handles the event later (a consumer's, a projection's)
is its child.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, Tracer

    from tidings.records import EventRecord

TRACER_NAME = "tidings"
_UNREAD = object()
_NOTHING: AbstractContextManager[None] = nullcontext()


class _Stored(msgspec.Struct):
    """The trace context kept in an event's metadata (the rest is not read)."""

    traceparent: str | None = None
    tracestate: str | None = None


_read_stored = msgspec.json.Decoder(_Stored).decode


@dataclass(frozen=True)
class Destination:
    """Where messages go or come from, as the messaging semantic conventions name it:
    ``system`` (``rabbitmq``, ``nats``, ``tidings`` for the in-process bus), ``name``
    (the exchange or stream) and, for a consumer, ``group`` (its queue or durable)."""

    system: str
    name: str
    group: str = ""


IN_PROCESS = Destination("tidings", "bus")


class _Api:
    """The parts of opentelemetry-api in use, imported once, and the tidings tracer of
    the current global provider."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace, self.context = trace, context
        self.propagator = TraceContextTextMapPropagator()
        self.placeholders = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self.provider: object = None
        self.tracer: Tracer | None = None
        # The API can also build the global provider from this variable, on first ask.
        self.from_environment = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

    def live_tracer(self) -> Tracer | None:
        """The tidings tracer, or None while no SDK provider is set globally."""
        # Asked once or twice per unit of work and per message: the API's own getter
        # looks the variable up in os.environ each time while no provider is set (1.5 µs
        # here, a tenth of that for one attribute read of the global it returns). If a
        # later API drops that global, the getter is asked, as before.
        provider: Any = getattr(self.trace, "_TRACER_PROVIDER", _UNREAD)
        if provider is None and not self.from_environment:
            return None
        if provider is _UNREAD or provider is None:
            provider = self.trace.get_tracer_provider()
        if provider is not self.provider:
            self.provider = provider
            live = not isinstance(provider, self.placeholders)
            self.tracer = provider.get_tracer(TRACER_NAME) if live else None
        return self.tracer


_api: _Api | None = None
_looked = False


def _tracing() -> _Api | None:
    """The API when it is installed (looked for once)."""
    global _api, _looked  # noqa: PLW0603 - the import is tried once per process
    if not _looked:
        _looked = True
        try:
            _api = _Api()
        except ImportError:
            _api = None
    return _api


def _tracer() -> tuple[_Api, Tracer] | tuple[None, None]:
    api = _tracing()
    if api is None:
        return None, None
    tracer = api.live_tracer()
    return (api, tracer) if tracer is not None else (None, None)


def enabled() -> bool:
    """True when spans are being made: the API is installed and an SDK provider is set."""
    return _tracer()[1] is not None


def current_context() -> dict[str, str]:
    """The ``traceparent`` (and ``tracestate``) of the current span, to store with the
    events recorded now; empty when tracing is off or no span is current."""
    api, _ = _tracer()
    if api is None or not api.trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    api.propagator.inject(carrier)
    return carrier


def trace_id() -> str | None:
    """The current trace id (32 hex digits), for log lines; None when there is none."""
    api = _tracing()
    if api is None:
        return None
    context = api.trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


class _Current:
    """Makes a span current for a block and ends it after, with the error if one left
    the block (a class: a generator's context manager costs more, once per message)."""

    __slots__ = ("api", "span", "token")

    def __init__(self, api: _Api, span: Span) -> None:
        self.api, self.span = api, span
        self.token: Any = None

    def __enter__(self) -> Span:
        self.token = self.api.context.attach(self.api.trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None and self.span.is_recording():
                self.span.record_exception(exc)
                status = self.api.trace.Status(self.api.trace.StatusCode.ERROR, str(exc))
                self.span.set_status(status)
        finally:
            self.api.context.detach(self.token)
            self.span.end()


def unit_of_work() -> AbstractContextManager[Any]:
    """The span of a unit of work that owns its transaction (the events it records carry
    this span's context); nothing when tracing is off."""
    api, tracer = _tracer()
    if api is None or tracer is None:
        return _NOTHING
    return _Current(api, tracer.start_span("tidings unit of work"))


def _parent(api: _Api, carrier: Mapping[str, str]) -> Context | None:
    """The context a carrier holds; None when it has no valid ``traceparent``. Without a
    ``tracestate`` (the usual case) it is parsed here, at a third of the propagator's cost
    (this runs for every message a consumer handles)."""
    traceparent = carrier.get("traceparent")
    if not traceparent:
        return None
    if carrier.get("tracestate"):
        return api.propagator.extract(carrier)
    context = _span_context(traceparent)
    if context is None:
        return None
    parent: Context = api.trace.set_span_in_context(api.trace.NonRecordingSpan(context))
    return parent


def processing(destination: Destination, record: EventRecord | None) -> AbstractContextManager[Any]:
    """A consumer's span around the handlers of one message; its parent is the message's
    context, the one its event was recorded in (the CloudEvent's ``traceparent``).
    Nothing when tracing is off, or for a message that could not be read."""
    api, tracer = _tracer()
    if api is None or tracer is None or record is None:
        return _NOTHING
    parent = _parent(api, stored_context(record.metadata))
    # Given at creation, as the conventions ask (a sampler may read them); the
    # destination's part is made once per destination.
    attributes = {**_processing_attributes(destination), **_about(record)}
    kind = api.trace.SpanKind.CONSUMER
    span = tracer.start_span(f"process {destination.name}", parent, kind, attributes)
    return _Current(api, span)


@cache
def _processing_attributes(destination: Destination) -> dict[str, str | int]:
    """The attributes of every process span of ``destination`` (never changed: copied)."""
    return _attributes(destination, "process", "process")


def failed(description: str) -> None:
    """Mark the current span as failed (a handler failed and was counted, not raised)."""
    api = _tracing()
    if api is None:
        return
    span = api.trace.get_current_span()
    if span.is_recording():
        span.set_status(api.trace.Status(api.trace.StatusCode.ERROR, description))


def step(
    saga_id: str, saga_type: str, name: str, phase: str, saga_context: str = ""
) -> AbstractContextManager[Any]:
    """The span of one try of a saga step (its unit of work and the commands it sends
    carry this context). ``saga_context`` is the trace context the saga was started in
    (as its row stores it): the parent when no span is current (a worker running the
    step later); else the current span stays the parent, linked to the saga's context
    when it is in another trace. Nothing when tracing is off."""
    api, tracer = _tracer()
    if api is None or tracer is None:
        return _NOTHING
    parent, links = None, None
    started = _parent(api, stored_context(saga_context.encode())) if saga_context else None
    if started is not None:
        current = api.trace.get_current_span().get_span_context()
        saga = api.trace.get_current_span(started).get_span_context()
        if not current.is_valid:
            parent = started
        elif current.trace_id != saga.trace_id:
            links = [api.trace.Link(saga)]
    span = tracer.start_span(f"saga step {name}", parent, links=links)
    if span.is_recording():
        span.set_attributes(
            {
                "tidings.saga.id": saga_id,
                "tidings.saga.type": saga_type,
                "tidings.saga.step": name,
                "tidings.saga.phase": phase,
            }
        )
    return _Current(api, span)


def applying(projection: str, record: EventRecord) -> AbstractContextManager[Any]:
    """A projection's span around applying one event; its parent is the context stored
    with the event. Nothing when tracing is off."""
    api, tracer = _tracer()
    if api is None or tracer is None:
        return _NOTHING
    parent = _parent(api, stored_context(record.metadata))
    span = tracer.start_span(f"project {projection}", parent)
    if span.is_recording():
        span.set_attributes(
            {
                "tidings.projection": projection,
                "tidings.position": record.position,
                "cloudevents.event_id": record.event_id,
                "cloudevents.event_type": record.event_type,
            }
        )
    return _Current(api, span)


def stored_context(metadata: bytes) -> dict[str, str]:
    """The trace context kept in an event's metadata (empty if it has none)."""
    if b"traceparent" not in metadata:
        return {}
    try:
        stored = _read_stored(metadata)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return {}
    found = {"traceparent": stored.traceparent, "tracestate": stored.tracestate}
    return {key: value for key, value in found.items() if value}


class Sends:
    """The relay's producer span of one publish call (a batch of up to ``publish_chunk``
    messages), linked to the context stored with each message's event.

    One span a call, not one a message: the SDK's span costs about as much as publishing
    the message does, and the conventions for batches ask for links. The span is a child of
    the stored context when every message of the call was recorded in one trace (a call of
    one message, or the events of one command), so that trace runs through the publish;
    else it is a root. The messages go out as they were stored: their ``traceparent`` is
    the context they were recorded in, which the consumer's span takes as its parent.
    Nothing is made when tracing is off."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.span: Span | None = None
        self.count = 0

    def start(self, records: Sequence[EventRecord]) -> None:
        """Start the span of a publish call of ``records``' messages."""
        self.span, self.count = None, len(records)
        api, tracer = _tracer()
        if api is None or tracer is None or not records:
            return
        stored = [stored_context(r.metadata) for r in records]
        parents = [s.get("traceparent", "") for s in stored]
        first = parents[0].split("-")
        one_trace = len(first) == 4 and all(p.split("-")[1:2] == first[1:2] for p in parents)
        parent = api.propagator.extract(stored[0]) if one_trace else None
        links = [
            api.trace.Link(context)
            for context in map(_span_context, parents[:MAX_LINKS])
            if context is not None
        ]
        kind = api.trace.SpanKind.PRODUCER
        span = tracer.start_span(f"send {self.destination.name}", parent, kind, links=links)
        if span.is_recording():
            attributes = _attributes(self.destination, "send", "publish")
            attributes["messaging.batch.message_count"] = len(records)
            if len(records) == 1:
                attributes.update(_about(records[0]))
            span.set_attributes(attributes)
        self.span = span

    def end(
        self, answers: Sequence[str | None] | Mapping[int, str | None], error: str = ""
    ) -> None:
        """End the span; refusals (their reasons in ``answers``) and messages left
        unanswered (``error``: the outage) make it an error that says how many."""
        span, self.span = self.span, None
        if span is None:
            return
        if span.is_recording():
            if isinstance(answers, Mapping):
                failed = [answers.get(i, error or "unanswered") for i in range(self.count)]
            else:
                failed = list(answers)
            reasons = [reason for reason in failed if reason is not None]
            if reasons:
                api = _tracing()
                assert api is not None  # noqa: S101 - a span exists only when the API does
                text = f"{len(reasons)} of {len(failed)} not published; first: {reasons[0]}"
                span.set_status(api.trace.Status(api.trace.StatusCode.ERROR, text))
        span.end()


MAX_LINKS = 128
"""Links a publish span carries at most (the SDK's default limit): the first messages'."""


def _span_context(traceparent: str) -> SpanContext | None:
    """The remote span context of a ``traceparent``, parsed without the propagator (it
    runs for every message published), or None when it is not one."""
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] == "ff" or [len(p) for p in parts] != [2, 32, 16, 2]:
        return None
    api = _tracing()
    assert api is not None  # noqa: S101 - called only with the API in use
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = api.trace.SpanContext(trace_id, span_id, True, api.trace.TraceFlags(flags))
    return context if context.is_valid else None


def _about(record: EventRecord) -> dict[str, str | int]:
    """A span's attributes about the one message it is about (few: the SDK checks each
    attribute it is given, and this runs for every message a consumer handles)."""
    return {
        "messaging.message.id": record.event_id,
        "cloudevents.event_type": record.event_type,
        "cloudevents.event_subject": record.stream_id,
    }


def _attributes(destination: Destination, kind: str, name: str) -> dict[str, str | int]:
    """A messaging span's attributes (OpenTelemetry messaging semantic conventions)."""
    attributes: dict[str, str | int] = {
        "messaging.system": destination.system,
        "messaging.destination.name": destination.name,
        "messaging.operation.type": kind,
        "messaging.operation.name": name,
    }
    if destination.group:
        attributes["messaging.consumer.group.name"] = destination.group
    return attributes


def destination_of(endpoint: object) -> Destination:
    """The destination of a publisher or subscription, from what it is named after: a
    RabbitMQ exchange (and queue), a NATS stream (and durable consumer), else the
    in-process bus."""
    system = getattr(endpoint, "messaging_system", None)
    if system == "rabbitmq":
        return Destination(system, endpoint.exchange, getattr(endpoint, "queue", ""))  # type: ignore[attr-defined]
    if system == "nats":
        return Destination(system, endpoint.stream, getattr(endpoint, "durable", ""))  # type: ignore[attr-defined]
    return IN_PROCESS
