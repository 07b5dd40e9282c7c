"""Plain reasons for two JSON inputs msgspec reports obscurely.

A leap second (``23:59:60Z``) is valid RFC 3339, but msgspec reads times into Python
datetimes, which cannot hold one, and says "Invalid RFC3339". An unpaired UTF-16
surrogate escape (``"\\ud800"``) is not Unicode text, and msgspec says "Input data was
truncated" or "unexpected end of hex escape". These run only once decoding has failed,
so valid input pays nothing for them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

# A \uXXXX escape: its backslash is preceded by an even number of backslashes (a "\\"
# before it is an escaped backslash, not the start of this escape).
_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*(\\u[0-9a-fA-F]{4})")
_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
_LOW = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_MARK = "\uffff"  # a noncharacter: stands in for an unpaired escape to find its place
_LEAP = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:60")
_AT = re.compile(r" - at `(\$[^`]*)`\Z")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def unpaired_surrogate(body: bytes) -> str | None:
    """Why ``body`` is not valid JSON text if it escapes half a surrogate pair, naming the
    escape, where it is and its byte offset; None when it has no such escape."""
    lone = _unpaired(body)
    if not lone:
        return None
    start, escape = lone[0]
    where = _place_of_first(body, lone)
    return (
        f"the JSON holds an unpaired UTF-16 surrogate escape {escape}{where} (byte {start}), "
        "which is not valid Unicode text: a character outside the Basic Multilingual Plane "
        "must be escaped as a whole surrogate pair (\\ud83d\\ude00) or sent as UTF-8"
    )


def leap_second(exc: msgspec.ValidationError, body: bytes) -> str | None:
    """Why the datetime ``exc`` complains about is refused if it is a leap second (a
    seconds field of 60), naming the field; None for any other validation error."""
    message = str(exc)
    found = _AT.search(message)
    if "RFC3339" not in message or found is None:
        return None
    path = found.group(1)
    try:
        value = _at_path(msgspec.json.decode(body), path)
    except (msgspec.DecodeError, RecursionError, LookupError, TypeError):
        return None
    if not (isinstance(value, str) and _LEAP.match(value)):
        return None
    return (
        f"{path} is {value!r}, a leap second: valid RFC 3339, but tidings reads times into "
        "Python datetimes, which cannot represent second 60, so it is not accepted; send "
        "23:59:59.999999 of that minute (or 00:00:00 of the next) instead"
    )


def _unpaired(body: bytes) -> list[tuple[int, str]]:
    """(byte offset, escape text) of every escape that is half of a surrogate pair alone."""
    escapes = [(m.start(1), m.end(1), m.group(1)) for m in _ESCAPE.finditer(body)]
    lone: list[tuple[int, str]] = []
    i = 0
    while i < len(escapes):
        start, end, text = escapes[i]
        if _HIGH.fullmatch(text):
            follows = i + 1 < len(escapes) and escapes[i + 1][0] == end
            if follows and _LOW.fullmatch(escapes[i + 1][2]):
                i += 2  # a whole pair
                continue
            lone.append((start, text.decode()))
        elif _LOW.fullmatch(text):
            lone.append((start, text.decode()))
        i += 1
    return lone


def _place_of_first(body: bytes, lone: list[tuple[int, str]]) -> str:
    """`` in $.path`` (or `` in a key of $.path``) of the first unpaired escape, found by
    decoding a copy where each stands in as a marker; empty when it cannot be told."""
    patched = bytearray(body)
    for start, _ in reversed(lone):
        patched[start : start + 6] = b"\\uffff"
    try:
        document = msgspec.json.decode(bytes(patched))
    except (msgspec.DecodeError, RecursionError):
        return ""
    found = _find_mark(document, "$")
    return f" in {found}" if found else ""


def _find_mark(value: Any, path: str) -> str | None:
    """The JSON path of the first string (value or key) holding the marker."""
    if isinstance(value, str):
        return path if _MARK in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"
            if _MARK in key:
                return f"a key of {path}"
            found = _find_mark(item, here)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_mark(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _at_path(document: Any, path: str) -> Any:
    """The value at a msgspec error path such as ``$.lines[0].at``."""
    value = document
    rest = path[1:]
    while rest:
        step = _STEP.match(rest)
        if step is None:
            raise LookupError(path)
        name, index = step.groups()
        value = value[name] if name is not None else value[int(index)]
        rest = rest[step.end() :]
    return value
