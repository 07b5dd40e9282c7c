"""The publisher's own HPUB commands are byte for byte what nats-py's publish writes."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from tidings.adapters.nats_chain import expectation_headers
from tidings.adapters.nats_wire import Commands, WireError, hpub

CONTENT_TYPE = "application/cloudevents+json"
NAME_CHARACTERS = "!#$%&'*+-.^_`|~abcXYZ019"


def nats_py_command(subject: str, reply: str, headers: dict[str, str], body: bytes) -> bytes:
    """What nats-py's publish hands to its buffer for this message (never connected: the
    command stays in the client's pending list)."""

    async def build() -> bytes:
        client = Client()
        await client._send_publish(subject, reply, body, len(body), headers)
        [command] = client._pending
        return bytes(command)

    return asyncio.run(build())


def ours(
    commands: Commands,
    reply: str,
    own: dict[str, str],
    body: bytes,
    id_: str,
    *,
    expect: tuple[str | None, int] | None = None,
) -> bytes:
    """Our command for a message of type order.placed."""
    head = commands.header_block(own, id_, expect)
    return hpub(commands.subject("order.placed"), reply, head, body)


def expected_headers(
    own: dict[str, str], id_: str, expect: tuple[str | None, int] | None = None
) -> dict[str, str]:
    return {
        **own,
        "Nats-Msg-Id": id_,
        **expectation_headers(expect),
        "Content-Type": CONTENT_TYPE,
    }


def test_a_message_without_headers_of_its_own() -> None:
    commands = Commands("shop", CONTENT_TYPE)
    made = ours(commands, "_INBOX.a.7", {}, b'{"x":1}', "e-1")
    assert made == (
        b"HPUB shop.order.placed _INBOX.a.7 74 81\r\n"
        b"NATS/1.0\r\nNats-Msg-Id: e-1\r\nContent-Type: application/cloudevents+json\r\n\r\n"
        b'{"x":1}\r\n'
    )
    assert made == nats_py_command(
        "shop.order.placed", "_INBOX.a.7", expected_headers({}, "e-1"), b'{"x":1}'
    )


@settings(max_examples=300, deadline=None)
@given(
    own=st.dictionaries(
        st.text(alphabet=NAME_CHARACTERS + " \t", min_size=0, max_size=8),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
        max_size=4,
    ),
    id_=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12),
    body=st.binary(max_size=40),
    expect=st.none()
    | st.tuples(
        st.none() | st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
        st.integers(min_value=0, max_value=2**63),
    ),
)
def test_any_headers_come_out_as_nats_py_writes_them(
    own: dict[str, str], id_: str, body: bytes, expect: tuple[str | None, int] | None
) -> None:
    """Names stripped and an empty one left out, values stripped with line breaks made
    spaces, the id (and the chain's expectation) and content type last, an own
    Nats-Msg-Id replaced in its place; a name nats-py refuses is refused."""
    commands = Commands("shop", CONTENT_TYPE)
    try:
        made = ours(commands, "_INBOX.r.1", own, body, id_, expect=expect)
    except WireError:
        with pytest.raises(nats.errors.BadHeaderError):  # nats-py refuses that name too
            nats_py_command(
                "shop.order.placed", "_INBOX.r.1", expected_headers(own, id_, expect), body
            )
        return
    assert made == nats_py_command(
        "shop.order.placed", "_INBOX.r.1", expected_headers(own, id_, expect), body
    )


def test_a_header_name_nats_cannot_carry_is_refused_as_nats_py_refuses_it() -> None:
    commands = Commands("shop", CONTENT_TYPE)
    with pytest.raises(WireError, match="header name 'bad:name'"):
        commands.header_block({"bad:name": "v"}, "e-1")
    with pytest.raises(nats.errors.BadHeaderError):
        nats_py_command("shop.x", "r", {"bad:name": "v"}, b"")


@pytest.mark.parametrize("routing_key", ["", "a b", "a.*", "a.>", "a..b", "a.", "tab\tkey"])
def test_a_subject_that_is_no_publish_subject_is_refused_with_the_rule(routing_key: str) -> None:
    with pytest.raises(WireError, match="without spaces, empty tokens or wildcards"):
        Commands("shop", CONTENT_TYPE).subject(routing_key)


def test_a_subject_checked_once_is_remembered_and_the_memory_is_bounded() -> None:
    commands = Commands("shop", CONTENT_TYPE)
    first = commands.subject("order.placed")
    assert commands.subject("order.placed") is first
    for n in range(5000):  # a custom encoder's endless routing keys
        commands.subject(f"k{n}")
    assert len(commands._subjects) <= 4096
    assert commands.subject("order.placed") == b"shop.order.placed"
