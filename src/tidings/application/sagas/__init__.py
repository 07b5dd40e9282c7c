"""Sagas: durable orchestration with LIFO compensation (see docs/sagas.md)."""

from tidings.application.sagas.orchestrator import Orchestrator
from tidings.domain.saga_state import SagaResult, Transition

__all__ = ["Orchestrator", "SagaResult", "Transition"]
