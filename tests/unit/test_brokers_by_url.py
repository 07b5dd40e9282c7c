"""Brokers by URL: the scheme picks the adapter; options pass through; others are refused."""

from __future__ import annotations

import pytest

from tidings import ConfigurationError
from tidings.adapters.brokers import open_partition, open_publisher, open_subscription
from tidings.adapters.nats import NatsPublisher, NatsSubscription
from tidings.adapters.rabbitmq import RabbitPublisher, RabbitSubscription


@pytest.mark.parametrize(
    ("url", "publisher_type", "subscription_type"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", RabbitPublisher, RabbitSubscription),
        ("AMQPS://broker.example:5671/", RabbitPublisher, RabbitSubscription),
        ("nats://127.0.0.1:4222", NatsPublisher, NatsSubscription),
    ],
)
def test_the_scheme_picks_the_adapter_without_connecting(
    url: str, publisher_type: type, subscription_type: type
) -> None:
    """Adapters connect on first use, so making them needs no running broker."""
    publisher = open_publisher(url)
    subscription = open_subscription(url, "inventory")
    try:
        assert isinstance(publisher, publisher_type)
        assert isinstance(subscription, subscription_type)
    finally:
        publisher.close()
        subscription.close()


def test_options_reach_the_adapter() -> None:
    """Keyword options are the adapter's own."""
    publisher = open_publisher("nats://127.0.0.1:4222", stream="ORDERS", subject_prefix="shop")
    try:
        assert isinstance(publisher, NatsPublisher)
        assert (publisher.stream, publisher.subject_prefix) == ("ORDERS", "shop")
    finally:
        publisher.close()


@pytest.mark.parametrize("url", ["kafka://localhost:9092", "localhost:5672", ""])
def test_a_url_of_no_known_broker_is_refused_with_the_ones_that_work(url: str) -> None:
    """The message names both schemes and the extras to install."""
    with pytest.raises(ConfigurationError, match=r"amqp://.*nats://"):
        open_publisher(url)
    with pytest.raises(ConfigurationError, match="tidings\\[nats\\]"):
        open_subscription(url, "inventory")


@pytest.mark.parametrize(
    ("url", "make", "wrong", "meant"),
    [
        ("nats://127.0.0.1:4222", "publisher", "chain_wave", "chain_waves"),
        ("amqp://guest:guest@127.0.0.1:5672/", "publisher", "exchang", "exchange"),
        ("nats://127.0.0.1:4222", "subscription", "batch", None),
        ("amqp://guest:guest@127.0.0.1:5672/", "partition", "queue_typ", "queue_type"),
    ],
)
def test_an_option_the_adapter_does_not_take_is_refused_with_the_ones_it_does(
    url: str, make: str, wrong: str, meant: str | None
) -> None:
    """A misspelt ``--option`` names the adapter, its options and the closest one, where
    it used to end in a ``TypeError`` traceback."""
    with pytest.raises(ConfigurationError, match=f"has no option '{wrong}'") as refused:
        if make == "publisher":
            open_publisher(url, **{wrong: True})
        elif make == "subscription":
            open_subscription(url, "inventory", **{wrong: True})
        else:
            open_partition(url, "inventory", 2, **{wrong: True})
    said = str(refused.value)
    assert "its options are " in said
    assert "--option name=value" in said
    assert (f"did you mean {meant}?" in said) if meant else ("did you mean" not in said)
