"""The delivery count read off a JetStream ack subject, as nats-py's parser reads it."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from tidings.adapters.nats import _delivered

REPLIES = [
    pytest.param("$JS.ACK.ORDERS.billing.3.120.45.1733580000000000000.10", id="v1"),
    pytest.param("$JS.ACK._.ACC.ORDERS.billing.4.120.45.1733580000000000000.10.x7", id="v2"),
    pytest.param("$JS.ACK.hub.ACC.ORDERS.billing.5.120.45.1733580000000000000.10", id="v2-short"),
]


@pytest.mark.parametrize("reply", REPLIES)
def test_the_count_is_the_one_nats_py_parses(reply: str) -> None:
    message = Msg(_client=None, subject="orders.placed", reply=reply, data=b"{}")  # type: ignore[arg-type]
    count = _delivered(message)
    assert message._metadata is None  # read without nats-py's full parse (the point)
    assert count == message.metadata.num_delivered
    assert count in (3, 4, 5)


def test_a_reply_of_another_shape_goes_to_nats_pys_parser() -> None:
    """Not an ack subject: nats-py's own parser says so (nothing is guessed)."""
    message = Msg(_client=None, subject="orders.placed", reply="_INBOX.abc", data=b"{}")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="JetStream"):
        _delivered(message)
