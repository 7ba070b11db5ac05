"""Distributed-array operations: manipulation (to be filled in; see containers/namespace.py)."""

from __future__ import annotations

__all__: list[str] = []
