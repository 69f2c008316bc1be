"""The management API (issue 6): `create_app` builds the ASGI app; routes by concern."""

from __future__ import annotations

from control.api.app import create_app

__all__ = ["create_app"]
