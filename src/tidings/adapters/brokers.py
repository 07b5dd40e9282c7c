"""Brokers by URL: the publisher or subscription an ``amqp://`` or ``nats://`` URL names.

For the command line (``tidings relay --to URL``, ``tidings consume --from URL``) and
other composition roots; options go to the adapter's constructor unchanged.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tidings.adapters.extras import require
from tidings.errors import ConfigurationError
from tidings.ports import Subscription, Transport

RABBITMQ_SCHEMES = frozenset({"amqp", "amqps"})
NATS_SCHEMES = frozenset({"nats", "tls"})
T = TypeVar("T")


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

        return _made(RabbitPublisher, url, **options)
    from tidings.adapters.nats import NatsPublisher

    return _made(NatsPublisher, url, **options)


def open_subscription(url: str, name: str, **options: Any) -> Subscription:
    """A ``RabbitSubscription`` (``name`` is its queue) or ``NatsSubscription`` (``name``
    is its durable consumer) for ``url``; it connects on first use."""
    if _kind(url) == "rabbitmq":
        from tidings.adapters.rabbitmq import RabbitSubscription

        return _made(RabbitSubscription, url, name, **options)
    from tidings.adapters.nats import NatsSubscription

    return _made(NatsSubscription, url, name, **options)


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
        return _made(RabbitSubscription, url, f"{name}.{partition}", **options)
    from tidings.adapters.nats import NatsSubscription

    options["filter_subject"] = f"{partition}.{options.get('filter_subject', '>')}"
    return _made(NatsSubscription, url, f"{name}-{partition}", **options)


def _made(kind: type[T], *args: Any, **options: Any) -> T:
    """``kind(*args, **options)``, once every option is known to be one of its own: a
    misspelt ``--option`` is a clear error naming the options there are, not a
    ``TypeError`` from deep inside."""
    accepted = [
        name
        for name, p in inspect.signature(kind).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ][len(args) :]
    for name in options:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(
                f"{kind.__name__} has no option {name!r}{hint}; its options are "
                f"{', '.join(accepted)} (--option name=value on the command line)"
            )
    return kind(*args, **options)
