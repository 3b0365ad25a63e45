"""Opaque public ids: `<prefix>_<14 url-safe characters>` (spec §1.6)."""

from __future__ import annotations

import re
import secrets

_LENGTH = 14

# Client-chosen ids travel in URL paths (spec §1.1): no slash, nothing to escape.
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(_LENGTH)[:_LENGTH]}"


def is_valid_client_id(value: str) -> bool:
    return CLIENT_ID_PATTERN.fullmatch(value) is not None


def worker_id() -> str:
    return new_id("wrk")


def task_id() -> str:
    return new_id("tsk")


def turn_id() -> str:
    return new_id("trn")


def user_id() -> str:
    return new_id("usr")


def organization_id() -> str:
    return new_id("org")


def api_key_id() -> str:
    return new_id("key")
