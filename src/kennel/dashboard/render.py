"""Pages: Jinja2 templates with autoescape on, and the filters they use."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from kennel.dashboard.deps import CSRF_FIELD, CSRF_HEADER
from kennel.dashboard.markdown import render_markdown
from kennel.models import Session

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).parent


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(milliseconds: int | None) -> str:
    if not milliseconds:
        return "—"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _size(size: int) -> str:
    amount = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{size} bytes"


@functools.cache
def environment() -> Environment:
    """The templates, loaded on the first page: Jinja2 (~1.5 MB) stays out of a server that
    only answers the API."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        duration=_duration,
        pretty_json=_pretty_json,
        markdown=render_markdown,
        size=_size,
    )
    env.globals.update(csrf_field=CSRF_FIELD, csrf_header=CSRF_HEADER)
    return env


def page(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A rendered page; every template gets the request and the session (None signed out)."""
    session: Session | None = getattr(request.state, "session", None)
    found = environment().get_template(template)
    html = found.render(request=request, session=session, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code, headers=headers)
