"""Brokers by URL: the publisher or subscription an ``amqp://`` or ``nats://`` URL names.

For the command line (``tidings relay --to URL``, ``tidings consume --from URL``) and
other composition roots; options go to the adapter's constructor unchanged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tidings.adapters.extras import require
from tidings.errors import ConfigurationError
from tidings.ports import Subscription, Transport

RABBITMQ_SCHEMES = frozenset({"amqp", "amqps"})
NATS_SCHEMES = frozenset({"nats", "tls"})


def _kind(url: str) -> str:
    """``rabbitmq`` or ``nats``, once its extra is known to be installed."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in RABBITMQ_SCHEMES:
        require("rabbitmq", f"RabbitMQ ({scheme}://)")
        return "rabbitmq"
    if scheme in NATS_SCHEMES:
        require("nats", f"NATS ({scheme}://)")
        return "nats"
    raise ConfigurationError(
        f"no broker for the URL scheme {scheme + '://' if scheme else '(none)'}: use "
        "amqp://user:password@host:5672/ (RabbitMQ, install tidings[rabbitmq]) or "
        "nats://host:4222 (NATS JetStream, install tidings[nats])"
    )


def open_publisher(url: str, **options: Any) -> Transport:
    """A ``RabbitPublisher`` or ``NatsPublisher`` for ``url`` (it connects on first use)."""
    if _kind(url) == "rabbitmq":
        from tidings.adapters.rabbitmq import RabbitPublisher

        return RabbitPublisher(url, **options)
    from tidings.adapters.nats import NatsPublisher

    return NatsPublisher(url, **options)


def open_subscription(url: str, name: str, **options: Any) -> Subscription:
    """A ``RabbitSubscription`` (``name`` is its queue) or ``NatsSubscription`` (``name``
    is its durable consumer) for ``url``; it connects on first use."""
    if _kind(url) == "rabbitmq":
        from tidings.adapters.rabbitmq import RabbitSubscription

        return RabbitSubscription(url, name, **options)
    from tidings.adapters.nats import NatsSubscription

    return NatsSubscription(url, name, **options)


def open_partition(url: str, name: str, partition: int, **options: Any) -> Subscription:
    """The subscription of one partition of a stream published with ``--partitions``.

    RabbitMQ: the queue ``<name>.<partition>``, bound with each binding key behind the
    partition's token (``3.#``), with a single active consumer, so a process that hangs
    while holding it is never read beside its successor. NATS: the durable consumer
    ``<name>-<partition>`` filtered on ``<prefix>.<partition>.<filter>``."""
    if _kind(url) == "rabbitmq":
        from tidings.adapters.rabbitmq import RabbitSubscription

        keys = options.pop("binding_keys", ("#",))
        keys = [keys] if isinstance(keys, str) else list(keys)
        options["binding_keys"] = [f"{partition}.{key}" for key in keys]
        options["single_active_consumer"] = True
        return RabbitSubscription(url, f"{name}.{partition}", **options)
    from tidings.adapters.nats import NatsSubscription

    options["filter_subject"] = f"{partition}.{options.get('filter_subject', '>')}"
    return NatsSubscription(url, f"{name}-{partition}", **options)
