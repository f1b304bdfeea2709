"""Commands for the worker side (``worker``, ``propagate``, ``status``); see ``__main__``."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the worker-side commands (filled in by the propagation worker)."""
