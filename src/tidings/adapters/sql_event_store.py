"""The event store logic both SQL backends share; each supplies its dialect's pieces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from tidings.errors import ConcurrencyError, DecodeError
from tidings.ports import ANY_VERSION, Params, Transaction
from tidings.records import (
    EventRecord,
    FreshRecords,
    StreamInfo,
    new_record,
    place_all,
    require_aware,
)

PAGE = 1000
LAST_VERSION = 2**31 - 1  # the largest INTEGER version: "to the end of the stream"
COLUMNS = (
    "position, event_id, stream_id, version, event_type, schema_version, occurred_at, data, "
    "metadata"
)


def at_position(r: EventRecord, position: int) -> EventRecord:
    """``r`` at its global position (replace() is several times slower, and this runs once
    per appended event)."""
    return new_record(
        r.event_id,
        r.stream_id,
        r.version,
        r.event_type,
        r.schema_version,
        r.occurred_at,
        r.data,
        r.metadata,
        position,
    )


class SqlEventStore:
    """Append with an optimistic version check; read streams and the log in pages.

    Subclasses set ``mark`` (the driver's placeholder), ``select`` (the column list as the
    dialect must read it) and implement ``_query``, ``_current_version`` and ``_insert``;
    ``_time`` and ``_moment`` convert times from and to the dialect's column.
    """

    mark = "?"
    select = COLUMNS

    def __init__(self, table: str, where: str) -> None:
        self.table = table
        self.where = where  # names the table in error messages

    def append(
        self,
        tx: Transaction,
        records: Sequence[EventRecord],
        expected_version: int,
        *,
        last: bool = False,
    ) -> list[EventRecord]:
        """Append one stream's records after checking the stream is at ``expected_version``."""
        if not records:
            return []
        stream_id = records[0].stream_id
        alone = False
        if expected_version == ANY_VERSION:
            expected_version = self._current_version(tx, stream_id)
            guard = None
        else:
            guard = expected_version  # checked by the INSERT itself: one statement, not two
            alone = last and tx.last_statement()
        if records[0].version != expected_version + 1:  # copies of our own: fresh
            records = FreshRecords(
                replace(r, version=expected_version + i) for i, r in enumerate(records, start=1)
            )
        positions = self._insert(tx, records, guard, alone)
        if positions is None:  # the stream was not at the expected version
            raise ConcurrencyError(
                stream_id, expected_version, self._current_version(tx, stream_id)
            )
        if isinstance(records, FreshRecords):  # nobody else holds them: no copies
            place_all(records, positions)
            return records
        return [at_position(r, p) for r, p in zip(records, positions, strict=True)]

    def stream_version(self, stream_id: str, tx: Transaction | None = None) -> int:
        """Version of the stream's last event (0 when it has none), committed or in ``tx``."""
        if tx is not None:
            return self._current_version(tx, stream_id)
        m = self.mark
        rows = self._query(
            f"SELECT coalesce(max(version), 0) FROM {self.table} WHERE stream_id = {m}",
            (stream_id,),
        )
        return int(rows[0][0])

    def stream_info(self, stream_id: str, as_of: datetime | None = None) -> StreamInfo:
        """Version and first and last event times in one statement (one consistent read)."""
        m, t = self.mark, self.table
        params: tuple[Any, ...] = (stream_id,)
        end = f"{LAST_VERSION + 1}"
        if as_of is not None:
            # The prefix before the first event after as_of: the stream is read in version
            # order on its (stream_id, version) key up to that event, so the cost grows
            # with the prefix, which a load as of that time reads anyway. (An index on
            # occurred_at answered late times faster, and cost every event written.)
            end = (
                f"coalesce((SELECT version FROM {t} WHERE stream_id = {m} "
                f"AND occurred_at > {m} ORDER BY version LIMIT 1), {LAST_VERSION + 1})"
            )
            params = (stream_id, stream_id, self._moment(require_aware(as_of)))
        rows = self._query(
            f"SELECT e.version, e.occurred_at, f.occurred_at FROM {t} e "
            f"JOIN {t} f ON f.stream_id = e.stream_id AND f.version = 1 "
            f"WHERE e.stream_id = {m} AND e.version < {end} ORDER BY e.version DESC LIMIT 1",
            params,
        )
        if not rows:
            return StreamInfo(stream_id)
        version, last, first = rows[0]
        return StreamInfo(stream_id, int(version), self._time(first), self._time(last))

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        as_of: datetime | None = None,
    ) -> Iterator[EventRecord]:
        """Records of one stream in version order, fetched a page at a time, so that a
        stream of any length is read in flat memory."""
        if as_of is not None:  # the same prefix as stream_info's, by the same query
            version_then = self.stream_info(stream_id, as_of).version
            to_version = version_then if to_version is None else min(to_version, version_then)
        m = self.mark
        sql = (
            f"SELECT {self.select} FROM {self.table} WHERE stream_id = {m} "
            f"AND version >= {m} AND version <= {m} ORDER BY version LIMIT {PAGE}"
        )
        version = max(from_version, 1)
        last = LAST_VERSION if to_version is None else min(to_version, LAST_VERSION)
        while version <= last:
            rows = self._query(sql, (stream_id, version, last))
            yield from self._records(rows)
            if len(rows) < PAGE:
                return
            version = int(rows[-1][3]) + 1

    def count(self) -> int:
        """How many events the log holds (committed)."""
        return int(self._query(f"SELECT count(*) FROM {self.table}", ())[0][0])

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Up to ``limit`` records after ``after_position``, in position order."""
        m = self.mark
        rows = self._query(
            f"SELECT {self.select} FROM {self.table} WHERE position > {m} "
            f"ORDER BY position LIMIT {m}",
            (after_position, limit),
        )
        return self._records(rows)

    def _records(self, rows: list[Any]) -> list[EventRecord]:
        """The records of a page of rows (subclasses may take a faster path)."""
        return [self._record(row) for row in rows]

    def _record(self, row: Sequence[Any]) -> EventRecord:
        data, metadata = row[7], row[8]
        try:
            occurred_at = self._time(row[6])
        except (TypeError, ValueError) as exc:
            raise DecodeError(
                f"occurred_at {row[6]!r} of the event at position {row[0]} in {self.where} "
                f"(table {self.table}) is not an ISO 8601 timestamp; the row is corrupt"
            ) from exc
        return new_record(
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            occurred_at,
            data.encode() if isinstance(data, str) else data,
            metadata.encode() if isinstance(metadata, str) else metadata,
            row[0],
        )

    def _time(self, value: Any) -> Any:
        return value

    def _moment(self, value: datetime) -> Any:
        return value

    def _query(self, sql: str, params: Params) -> list[Any]:
        raise NotImplementedError

    def _current_version(self, tx: Transaction, stream_id: str) -> int:
        raise NotImplementedError

    def _insert(
        self, tx: Transaction, records: Sequence[EventRecord], guard: int | None, alone: bool
    ) -> list[int] | None:
        """Insert and return the positions; or None, having written nothing that will stay
        (the caller raises, which rolls the transaction back), when the stream's versions
        were taken or, with a ``guard``, the stream was not at that version. ``alone``: the
        INSERT is a transaction of its own (``Transaction.last_statement``), so it must
        write all of its rows or none."""
        raise NotImplementedError
