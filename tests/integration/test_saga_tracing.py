"""A saga keeps its trace: the saga row stores the W3C trace context it was started in,
and the steps a saga worker runs later (after a retry's timer, here driven by an injected
clock, in a second connection to the database, as another process would) are spans of
that trace; run inside another trace, a step keeps that parent and links the saga's."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tidings
from tidings.domain.saga import RetryPolicy, SagaDefinition, Step, StepContext, StepRefusedError
from tidings.observability import tracing
from tidings.workers.sagas import SagaWorker

from .test_tracing import _unset_global_provider, by_id, ids, parent_of, spans

__all__ = ["spans"]  # the in-memory exporter fixture

START = 1_000.0
RETRY_IN = 5.0


def checkout() -> SagaDefinition:
    """``count``, then ``reserve``: down on its first try (a retry in 5 s), refused on
    the second, so ``count`` is compensated in the same pass."""
    tries: list[int] = []

    def reserve(ctx: StepContext) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("the stock service is down")
        raise StepRefusedError("out of stock")

    return SagaDefinition(
        "checkout",
        [
            Step("count", lambda ctx: None, compensate=lambda ctx: None),
            Step("reserve", reserve, retry=RetryPolicy(1, (RETRY_IN,))),
        ],
    )


def started_then_run_later(
    tmp_path: Path, spans: InMemorySpanExporter, around_start: Callable[[], object]
) -> tuple[tuple[int, int], list[ReadableSpan]]:
    """Start the saga (inside what ``around_start`` opens), then run its retry from a
    second connection once the clock reaches it; return the (trace id, span id) stored
    with the saga and the step spans of the later run."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    now = [START]
    saga = checkout()
    with tidings.connect(url) as starter, around_start():
        result = starter.sagas([saga], clock=lambda: now[0]).start(saga, {})
    assert (result.state, result.wake_at) == ("RUNNING", START + RETRY_IN)
    before = len(spans.get_finished_spans())
    now[0] = START + RETRY_IN
    with tidings.connect(url) as later:
        worker = SagaWorker(later, [saga], clock=lambda: now[0])
        assert worker.run_once() > 0
        ran = list(spans.get_finished_spans())[before:]
        with later.unit_of_work() as uow:
            row = worker.sagas.saga_log.get(uow, result.saga_id)
    assert row is not None
    assert row.state == "COMPENSATED"
    steps = [s for s in ran if s.name.startswith("saga step")]
    phases = [(s.name, dict(s.attributes or {})["tidings.saga.phase"]) for s in steps]
    assert phases == [("saga step reserve", "action"), ("saga step count", "compensation")]
    return stored_ids(row.trace_context), steps


def stored_ids(trace_context: str) -> tuple[int, int]:
    """(trace id, span id) of a saga row's trace context; (0, 0) when it has none."""
    return parent_of(json.loads(trace_context)) if trace_context else (0, 0)


def test_a_step_a_worker_runs_later_joins_the_trace_the_saga_started_in(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """Started inside a request's span, the saga stores its start's unit of work (the
    request's child); the retry and the compensation a worker runs later are children
    of that context, in the request's trace, with no links."""
    tracer = trace.get_tracer("the application")

    def request() -> object:
        return tracer.start_as_current_span("POST /checkout")

    stored, steps = started_then_run_later(tmp_path, spans, request)
    found = by_id(spans)
    [request_ids] = [ids(s) for s in found.values() if s.name == "POST /checkout"]
    for step in steps:
        assert step.context is not None
        assert step.context.trace_id == request_ids[0]
        assert step.parent is not None
        assert (step.parent.trace_id, step.parent.span_id) == stored
        assert not step.links
    start = found[stored[1]]
    assert start.name == "tidings unit of work"
    assert start.parent is not None
    assert (start.parent.trace_id, start.parent.span_id) == request_ids


def test_a_saga_started_outside_any_span_still_has_one_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """With no span current at the start, the start's unit of work is the trace's root:
    the steps run then and the steps run later are all its children."""
    stored, later = started_then_run_later(tmp_path, spans, nullcontext)
    assert by_id(spans)[stored[1]].parent is None
    steps = [s for s in spans.get_finished_spans() if s.name.startswith("saga step")]
    assert len(steps) == len(later) + 2  # count and the first try of reserve, at the start
    assert {(s.parent.trace_id, s.parent.span_id) for s in steps if s.parent} == {stored}
    assert all(s.parent is not None for s in steps)


def test_a_step_run_inside_another_trace_keeps_its_parent_and_links_the_saga(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """A worker pass run inside a span of its own trace (a consumer's, a scheduled
    job's): each step is that span's child, linked to the context the saga started in."""
    tracer = trace.get_tracer("the application")
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    now = [START]
    saga = checkout()
    with tidings.connect(url) as store:
        with tracer.start_as_current_span("POST /checkout"):
            saga_id = store.sagas([saga], clock=lambda: now[0]).start(saga, {}).saga_id
        now[0] = START + RETRY_IN
        worker = SagaWorker(store, [saga], clock=lambda: now[0])
        with tracer.start_as_current_span("nightly job") as job:
            worker.run_once()
        with store.unit_of_work() as uow:
            row = worker.sagas.saga_log.get(uow, saga_id)
    assert row is not None
    stored = stored_ids(row.trace_context)
    late = [s for s in spans.get_finished_spans() if s.name.startswith("saga step")][2:]
    assert len(late) == 2
    for step in late:
        assert step.parent is not None
        assert step.parent.span_id == job.get_span_context().span_id
        assert [(link.context.trace_id, link.context.span_id) for link in step.links] == [stored]


def test_with_tracing_off_the_saga_stores_no_context_and_nothing_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No SDK provider: the saga row's trace context is empty, and a step given a stored
    context gets the shared do-nothing context without reading it."""
    _unset_global_provider()
    saga = checkout()
    with tidings.connect(f"sqlite:///{tmp_path / 'sagas.db'}") as store:
        sagas = store.sagas([saga], clock=lambda: START)
        saga_id = sagas.start(saga, {}).saga_id
        with store.unit_of_work() as uow:
            row = sagas.saga_log.get(uow, saga_id)
    assert row is not None
    assert row.trace_context == ""

    def parsed(metadata: bytes) -> dict[str, str]:
        raise AssertionError("a stored context was parsed with tracing off")

    monkeypatch.setattr(tracing, "stored_context", parsed)
    context = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    assert tracing.step("s", "checkout", "count", "action", context) is tracing.unit_of_work()
