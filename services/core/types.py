"""Shared type aliases."""

from typing import Any

JsonObject = dict[str, Any]
