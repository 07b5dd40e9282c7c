"""Which definition drives a saga: every deployed version of each, and the upcasters
that move running sagas from one version to the next.

A saga is driven only on the definition of its own version. If an upcaster leaves from
that version, the saga is moved first (the move is a transition on its history), and the
position the upcaster returns must fit the new steps. A saga of a version nothing here
knows, or whose position does not fit its definition, is refused with
``SagaVersionError`` and left as it was: never run on the wrong steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from tidings.domain.saga import SagaDefinition
from tidings.domain.saga_state import SagaRow
from tidings.domain.saga_versions import SagaPosition, SagaUpcaster
from tidings.errors import ConfigurationError, SagaVersionError


@dataclass(frozen=True)
class Upcast:
    """A saga moved to a newer version: its new row and what to say on its history."""

    row: SagaRow
    detail: str


class SagaVersions:
    """The definitions (all versions) and upcasters an orchestrator knows."""

    def __init__(self, known: Iterable[SagaDefinition | SagaUpcaster] = ()) -> None:
        self._definitions: dict[tuple[str, int], SagaDefinition] = {}
        self._upcasters: dict[tuple[str, int], SagaUpcaster] = {}
        for item in known:
            if isinstance(item, SagaUpcaster):
                self.add_upcaster(item)
            elif isinstance(item, SagaDefinition):
                self.add(item)
            else:
                raise ConfigurationError(
                    f"{item!r} is neither a SagaDefinition nor a SagaUpcaster: give the"
                    " orchestrator your saga definitions (every version still running) and"
                    " the upcasters between them"
                )

    def add(self, definition: SagaDefinition) -> None:
        """Know ``definition`` (a version already known keeps its first definition)."""
        self._definitions.setdefault((definition.name, definition.version), definition)

    def add_upcaster(self, upcaster: SagaUpcaster) -> None:
        """Know how sagas of one version move to a newer one (one upcaster per version)."""
        key = (upcaster.saga, upcaster.from_version)
        if key in self._upcasters:
            raise ConfigurationError(
                f"saga {upcaster.saga!r} already has an upcaster from version"
                f" {upcaster.from_version}: give one per version"
            )
        self._upcasters[key] = upcaster

    def versions(self, saga_type: str) -> list[int]:
        """The versions of ``saga_type`` that have a definition here."""
        return sorted(v for (name, v) in self._definitions if name == saga_type)

    def upcast(self, row: SagaRow) -> Upcast | None:
        """The saga moved through the upcasters from its version, or None if none applies."""
        moved, path = row, [row.definition_version]
        while (upcaster := self._upcasters.get((row.saga_type, path[-1]))) is not None:
            position = SagaPosition(
                moved.state,
                dict(moved.data),
                moved.step,
                list(moved.executed),
                list(moved.compensated),
            )
            new = self._call(upcaster, row, position)
            if new is None:
                break
            moved = replace(
                moved,
                definition_version=upcaster.to_version,
                data=dict(new.data),
                step=new.step,
                executed=list(new.executed),
                compensated=list(new.compensated),
            )
            path.append(upcaster.to_version)
        if moved is row:
            return None
        self.definition(moved)  # the new position must fit the new steps
        detail = "version " + " -> ".join(str(v) for v in path)
        return Upcast(moved.next(), f"{detail}, at step {moved.step}")

    def check(self, row: SagaRow) -> None:
        """Raise ``SagaVersionError`` unless a definition here can drive ``row`` (directly,
        or once upcast): asked before an operator action moves a saga."""
        upcast = self.upcast(row)
        self.definition(row if upcast is None else upcast.row)

    def _call(
        self, upcaster: SagaUpcaster, row: SagaRow, position: SagaPosition
    ) -> SagaPosition | None:
        where = (
            f"the upcaster of saga {row.saga_type!r} from version {upcaster.from_version}"
            f" to {upcaster.to_version}"
        )
        try:
            new = upcaster.upcast(position)
        except Exception as exc:  # user code: name it and the saga, leave the saga alone
            raise SagaVersionError(
                f"{where} failed on saga {row.saga_id}: {exc!r}. The saga was left as it"
                " was; fix the upcaster and run again"
            ) from exc
        if new is not None and not isinstance(new, SagaPosition):
            raise SagaVersionError(
                f"{where} returned {type(new).__name__} for saga {row.saga_id}: return a"
                " SagaPosition (dataclasses.replace of the one given), or None to leave the"
                " saga on its version"
            )
        return new

    def definition(self, row: SagaRow) -> SagaDefinition:
        """The definition that drives ``row``, or ``SagaVersionError`` saying why none can."""
        found = self._definitions.get((row.saga_type, row.definition_version))
        if found is None:
            known = self.versions(row.saga_type)
            newer = known and row.definition_version > max(known)
            hint = (
                "it was started by newer code: run that code to drive it"
                if newer
                else "deploy that definition, or an upcaster from it, before driving it"
            )
            raise SagaVersionError(
                f"saga {row.saga_id} is of type {row.saga_type!r} version"
                f" {row.definition_version}, and this orchestrator knows versions {known}:"
                f" {hint}. The saga was left as it was"
            )
        names = [s.name for s in found.steps]
        begun = [*row.executed, *row.unanswered]  # a remote step whose reply never came
        strangers = [n for n in [*begun, *row.compensated] if n not in names]
        undone_not_done = [n for n in row.compensated if n not in begun]
        if strangers or undone_not_done or not 0 <= row.step <= len(names):
            raise SagaVersionError(
                f"saga {row.saga_id} does not fit version {row.definition_version} of"
                f" {row.saga_type!r} (steps {names}): it is at step {row.step} with steps"
                f" done {row.executed} and undone {row.compensated}. Did the steps change"
                " without a new version, or does an upcaster forget to map a step? The saga"
                " was left as it was"
            )
        return found
