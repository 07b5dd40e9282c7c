"""Optional drivers: each backend and broker needs its extra, and a missing one is said
in one line that names what to install, when the component is opened, not as a
traceback at its first use."""

from __future__ import annotations

from importlib.util import find_spec

from tidings.errors import ConfigurationError

EXTRAS: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg", "psycopg_pool"),
    "rabbitmq": ("pika",),
    "nats": ("nats",),
    "sqlalchemy": ("sqlalchemy",),
    "crypto": ("cryptography",),
    "metrics": ("prometheus_client",),
    "console": ("starlette", "jinja2", "uvicorn", "multipart"),
}
"""Each extra of ``pip install 'tidings[...]'`` and the modules it brings."""


def require(extra: str, what: str) -> None:
    """Raise ``ConfigurationError`` if a module of ``extra`` is not installed; ``what``
    says what needs it (``a PostgreSQL database``, ``the NATS publisher``)."""
    missing = [module for module in EXTRAS[extra] if find_spec(module) is None]
    if missing:
        raise ConfigurationError(
            f"{what} needs the {extra} extra ({', '.join(missing)} not installed):"
            f" pip install 'tidings[{extra}]'"
        )
