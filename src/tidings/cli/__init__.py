"""The ``tidings`` command."""
