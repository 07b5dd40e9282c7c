"""One trace from the command in service A to the handler in service B (level 5, real
RabbitMQ and NATS), with the OpenTelemetry SDK's in-memory exporter: A's unit of work, the
relay's producer span, B's consumer span and the events B's handler records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

import tidings
from tidings.adapters.brokers import open_publisher
from tidings.application.handling import Delivery, Handlers
from tidings.application.projections import Projection
from tidings.application.unit_of_work import UnitOfWork
from tidings.domain.saga import SagaDefinition, Step, StepContext, StepRefusedError
from tidings.observability import tracing
from tidings.serialization.cloudevents import from_message
from tidings.testing import RecordingTransport
from tidings.testing.contract import Counted, Counter, Named, new_id

from .test_cli_trace import handle_twice
from .test_consumer_faults import Feed, feed
from .test_conversation import ChargePayment, count_and_relay, follow_in_b

__all__ = ["feed"]  # the broker fixture, parametrised over RabbitMQ and NATS


def _unset_global_provider() -> None:
    """The API sets its global provider once per process; tests put it back unset, so
    the tests after these run with tracing off, as they were written for."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider, global for the test, whose spans end up in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _unset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _unset_global_provider()


def parent_of(context: dict[str, str] | str) -> tuple[int, int]:
    """(trace id, span id) of a ``traceparent``."""
    value = context if isinstance(context, str) else context["traceparent"]
    _, trace_id, span_id, _ = value.split("-")
    return int(trace_id, 16), int(span_id, 16)


def ids(span: ReadableSpan) -> tuple[int, int]:
    """(trace id, span id) of a finished span."""
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span called ``name``."""
    named = [s for s in found if s.name == name]
    assert len(named) == 1, [s.name for s in found]
    return named[0]


def stored_trace(store: tidings.Store, stream: str) -> tuple[int, int]:
    """(trace id, span id) stored with the one event of ``stream``."""
    [record] = list(store.events.read_stream(stream))
    return parent_of(json.loads(record.metadata))


def messaging_spans(
    spans: InMemorySpanExporter, feed: Feed, event_id: str
) -> tuple[int, int, ReadableSpan]:
    """Check the command's, the relay's and the consumer's spans of one event: the
    producer span and the consumer span are both the command's children (the consumer's
    parent is the context stored with the event), with the messaging attributes; return
    the trace id, the command's span id and the consumer span."""
    finished = list(spans.get_finished_spans())
    command = [s for s in finished if s.name == "tidings unit of work" and s.parent is None]
    assert command, [s.name for s in finished]
    trace_id, command_span = ids(command[0])

    send = one(finished, f"send {feed.topic if feed.kind == 'rabbitmq' else feed.stream}")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert (send.parent.trace_id, send.parent.span_id) == (trace_id, command_span)
    attributes = dict(send.attributes or {})
    assert attributes["messaging.system"] == feed.kind
    assert attributes["messaging.message.id"] == event_id
    assert attributes["messaging.operation.type"] == "send"

    process = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert len(process) == 1, [s.name for s in finished]
    assert process[0].parent is not None
    assert (process[0].parent.trace_id, process[0].parent.span_id) == (trace_id, command_span)
    assert dict(send.attributes or {})["messaging.batch.message_count"] == 1
    assert [ids(send)[0]] == [link.context.trace_id for link in send.links]
    attributes = dict(process[0].attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.consumer.group.name"] == feed.name
    assert attributes["messaging.message.id"] == event_id
    return trace_id, command_span, process[0]


def test_one_trace_runs_from_the_command_in_a_through_the_broker_to_b_and_its_events(
    feed: Feed, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """A's unit of work records Counted; its relay publishes it (a producer span, child of
    the context stored with the event and linked to it); B's consumer handles it in a
    consumer span whose parent is the message's context, the one stored with the event;
    the event and the command B's handler records carry the consumer span's context. One
    trace id throughout, and the messaging attributes name the broker."""
    registry = tidings.EventRegistry([Counted, Named, ChargePayment])
    a = tidings.connect(f"sqlite:///{tmp_path / 'a.db'}", outbox=True, registry=registry)
    b = tidings.connect(f"sqlite:///{tmp_path / 'b.db'}", outbox=True, registry=registry)
    options = {"exchange": feed.topic} if feed.kind == "rabbitmq" else dict(feed.options)
    publisher = open_publisher(feed.url, **options)
    subscription = feed.subscription()
    try:
        counter, counted = count_and_relay(a, publisher)
        follower = follow_in_b(b, subscription)

        trace_id, command, process = messaging_spans(spans, feed, counted.event_id)
        assert stored_trace(a, counter.id) == (trace_id, command)

        # What B's handler recorded carries B's consumer span on: in its log and on the wire.
        assert stored_trace(b, follower.id) == ids(process)
        out = RecordingTransport()
        relay_b = b.relay(out)
        assert relay_b.run_once() == 2
        relay_b.release()
        for body in (json.loads(m.body) for m in out.confirmed):
            assert parent_of(body["traceparent"]) == ids(process), body["type"]
    finally:
        subscription.close()
        publisher.close()
        a.close()
        b.close()


def test_a_message_is_handled_in_the_context_stored_with_it(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """Whoever published it (here no relay at all), the consumer span's parent is the
    context the event was recorded in, from the CloudEvent's ``traceparent``."""
    registry = tidings.EventRegistry([Counted])
    a = tidings.connect(f"sqlite:///{tmp_path / 'a.db'}", outbox=True, registry=registry)
    b = tidings.connect(f"sqlite:///{tmp_path / 'b.db'}", registry=registry)
    try:
        counter = Counter(new_id("cart"))
        counter.increment(1)
        with a.unit_of_work() as uow:
            uow.track(counter)
        [record] = list(a.events.read_stream(counter.id))
        body = a.encode(record).body
        handlers = Handlers()
        handlers.add(Counted, "noop", lambda event, uow: None)
        [verdict] = b.processor(handlers).process([Delivery(body, from_message(body))])
        assert verdict.applied == ("noop",)
        process = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
        assert len(process) == 1
        assert process[0].parent is not None
        assert (process[0].parent.trace_id, process[0].parent.span_id) == stored_trace(
            a, counter.id
        )
    finally:
        a.close()
        b.close()


def test_without_an_sdk_nothing_is_built_and_the_stored_context_passes_on(
    tmp_path: Path,
) -> None:
    """With the API installed but no SDK provider set, no span is started (the unit of
    work gets the shared do-nothing context, the relay makes no span) and an event a
    handler records keeps the ``traceparent`` of the message it handled."""
    _unset_global_provider()
    assert not tracing.enabled()
    assert tracing.unit_of_work() is tracing.unit_of_work()  # the one shared nullcontext
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    registry = tidings.EventRegistry([Counted, Named])
    a = tidings.connect(f"sqlite:///{tmp_path / 'a.db'}", registry=registry)
    b = tidings.connect(f"sqlite:///{tmp_path / 'b.db'}", registry=registry)
    try:
        counter = Counter(new_id("cart"))
        counter.increment(1)
        with a.unit_of_work({"traceparent": traceparent}) as uow:
            uow.track(counter)
        [record] = list(a.events.read_stream(counter.id))
        sends = tracing.Sends(tracing.IN_PROCESS)
        sends.start([record])
        assert sends.span is None
        follower = Counter(new_id("payment"))

        def follow(event: Counted, uow: UnitOfWork) -> None:
            follower.rename("for the cart")
            uow.track(follower)

        handlers = Handlers()
        handlers.add(Counted, "follow", follow)
        body = a.encode(record).body
        b.processor(handlers).process([Delivery(body, from_message(body))])
        assert stored_trace(b, follower.id) == parent_of(traceparent)
    finally:
        a.close()
        b.close()


def by_id(spans: InMemorySpanExporter) -> dict[int, ReadableSpan]:
    """The finished spans by span id."""
    return {ids(s)[1]: s for s in spans.get_finished_spans()}


def test_a_projection_applies_each_event_in_a_span_under_the_one_that_recorded_it(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """The runner's span of an event it applies is a child of the context stored with
    the event (the unit of work that recorded it), however much later it runs."""
    store = tidings.connect(
        f"sqlite:///{tmp_path / 'a.db'}", registry=tidings.EventRegistry([Counted])
    )
    try:
        counter = Counter(new_id("cart"))
        counter.increment(1)
        with store.unit_of_work() as uow:
            uow.track(counter)
        seen = Projection("seen", {Counted: lambda uow, event: None})
        runner = store.projections([seen])
        try:
            runner.run_once()
        finally:
            runner.close()
        apply = one(list(spans.get_finished_spans()), "project seen")
        assert apply.parent is not None
        assert (apply.parent.trace_id, apply.parent.span_id) == stored_trace(store, counter.id)
        assert dict(apply.attributes or {})["tidings.projection"] == "seen"
    finally:
        store.close()


def test_a_saga_step_runs_in_a_span_and_what_it_records_carries_it_on(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """A saga started inside a request's span: each step's span is the request's child,
    and the event a step records carries the context of the step's unit of work, a child
    of the step's span; a step that fails ends its span as an error."""
    store = tidings.connect(
        f"sqlite:///{tmp_path / 'a.db'}", registry=tidings.EventRegistry([Counted])
    )
    counter = Counter(new_id("cart"))

    def count(ctx: StepContext) -> None:
        counter.increment(1)
        ctx.uow.track(counter)

    def refuse(ctx: StepContext) -> None:
        raise StepRefusedError("out of stock")

    saga = SagaDefinition("checkout", [Step("count", count), Step("reserve", refuse)])
    try:
        tracer = trace.get_tracer("the application")
        with tracer.start_as_current_span("POST /checkout") as request:
            store.sagas([saga]).start(saga, {})
        found = by_id(spans)
        steps = {s.name: s for s in found.values() if s.name.startswith("saga step")}
        assert set(steps) == {"saga step count", "saga step reserve"}
        for span in steps.values():
            assert span.parent is not None
            assert span.parent.span_id == request.get_span_context().span_id
        assert steps["saga step count"].status.status_code is trace.StatusCode.UNSET
        assert steps["saga step reserve"].status.status_code is trace.StatusCode.ERROR
        unit = found[stored_trace(store, counter.id)[1]]
        assert unit.name == "tidings unit of work"
        assert unit.parent is not None
        assert unit.parent.span_id == ids(steps["saga step count"])[1]
    finally:
        store.close()


def test_a_handler_that_fails_ends_the_consumer_span_as_an_error(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """The batch pass a handler fails is one error span with the exception; the message
    handled again alone, where the failure is counted as an attempt, is another error
    span; its next delivery, which succeeds, is a span without error. All three are
    children of the message's stored context."""
    registry = tidings.EventRegistry([Counted])
    a = tidings.connect(f"sqlite:///{tmp_path / 'a.db'}", outbox=True, registry=registry)
    b = tidings.connect(f"sqlite:///{tmp_path / 'b.db'}", registry=registry)
    try:
        counter, _ = count_and_relay(a, RecordingTransport())
        [record] = list(a.events.read_stream(counter.id))
        handle_twice(b, a.encode(record).body)
        process = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
        codes = [s.status.status_code for s in process]
        assert codes == [trace.StatusCode.ERROR, trace.StatusCode.ERROR, trace.StatusCode.UNSET]
        assert "the card service timed out" in str(process[0].events[0].attributes)
        assert {(s.parent.trace_id, s.parent.span_id) for s in process if s.parent} == {
            stored_trace(a, counter.id)
        }
    finally:
        a.close()
        b.close()
