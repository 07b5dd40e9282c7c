"""Loading the user's objects named on the command line as ``module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from tidings.errors import ConfigurationError


def load(path: str, what: str) -> Any:
    """The object at ``module.sub:attr.attr`` (the current folder is importable)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{what} {path!r} must look like package.module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for {what}: {exc}") from exc
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError as exc:
            raise ConfigurationError(f"{module_name} has no {attribute!r} for {what}") from exc
    return found() if callable(found) and not isinstance(found, type) else found


def broker_options(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs for a broker adapter; numbers and true/false are converted."""
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigurationError(f"broker option {pair!r} must look like name=value")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    continue
        options[key] = value
    return options
