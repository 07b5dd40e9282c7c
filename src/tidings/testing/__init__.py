"""Public testing helpers: fakes for the injected clock and ids, and the contract suites.

``StoreContract`` is the behaviour every backend passes; subclass it in a test module and
provide a ``make_store`` fixture that returns a factory for a fresh, empty store.
"""

from tidings.testing.contract import StoreContract
from tidings.testing.fakes import FixedClock, SequentialIds

__all__ = ["FixedClock", "SequentialIds", "StoreContract"]
