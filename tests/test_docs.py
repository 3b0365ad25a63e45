"""The docs keep up with the code: every setting, API route, error code and CLI command is
documented, and every link stays inside the repository and leads somewhere."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from fastapi import FastAPI
from starlette.routing import Route

import kennel.agent.tools.sandbox  # noqa: F401 (defines an error class of its own)
from kennel.app import build, create_app
from kennel.cli import main
from kennel.config import Settings
from kennel.errors import KennelError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOT_SETTINGS = frozenset({"KENNEL_TEST_PG_DSN", "KENNEL_SCREENSHOTS"})
"""The test suite's own variable: documented, but not a server setting."""

METHODS = "GET|POST|PUT|PATCH|DELETE"
ROUTE = re.compile(rf"\b({METHODS}) (/api/[^\s`?)\]]*)")
SETTING_ROW = re.compile(r"^\| `(KENNEL_[A-Z0-9_]+)` \| ([^|]*) \|", re.MULTILINE)
VARIABLE = re.compile(r"\bKENNEL_[A-Z0-9_]+")
HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?: +\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]: *(\S+)", re.MULTILINE)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def documented_text() -> Iterator[tuple[Path, str]]:
    """The docs, and the example configuration files they point at."""
    for path in [*markdown_files(), *sorted((ROOT / "deploy").iterdir())]:
        yield path, path.read_text()


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def headings(text: str) -> list[str]:
    lines = without_code_blocks(text).splitlines()
    return [match[2] for line in lines if (match := HEADING.match(line))]


# -- settings ---------------------------------------------------------------------------------


def setting_variables() -> set[str]:
    return {f"KENNEL_{name.upper()}" for name in Settings.model_fields}


def shown(value: Any) -> str:
    """A default as the configuration table writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_every_setting_has_a_row_in_the_configuration_table() -> None:
    rows = dict(SETTING_ROW.findall((DOCS / "configuration.md").read_text()))
    assert sorted(setting_variables() - rows.keys()) == [], "settings without a row"
    assert sorted(rows.keys() - setting_variables()) == [], "rows of settings that don't exist"


def test_the_documented_defaults_are_the_real_ones() -> None:
    rows = dict(SETTING_ROW.findall((DOCS / "configuration.md").read_text()))
    for name, field in Settings.model_fields.items():
        cell = rows.get(f"KENNEL_{name.upper()}", "")
        literal = re.match(r"`([^`]*)`", cell.strip())
        default = field.get_default(call_default_factory=True)
        if literal and default is not None:  # None: the cell says what stands in for it
            assert literal[1] == shown(default), f"KENNEL_{name.upper()}"


def test_every_kennel_variable_the_docs_name_exists() -> None:
    known = setting_variables() | NOT_SETTINGS
    for path, text in documented_text():
        for name in VARIABLE.findall(text):
            # `KENNEL_WEBHOOK_*` names a family of settings.
            exists = name in known or (
                name.endswith("_") and any(k.startswith(name) for k in known)
            )
            assert exists, f"{path.relative_to(ROOT)} names {name}, which is no setting"


# -- API routes --------------------------------------------------------------------------------


def normal(path: str) -> str:
    """A route path with its parameters unnamed: `/api/workers/{}/files/{}`."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Method and path of every route under /api: the API's from the app's OpenAPI description
    (FastAPI's public account of its routes), the documentation pages from the app's own list."""
    described = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    pages = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    return {(method, normal(path)) for method, path in described | pages if path.startswith("/api")}


@pytest.fixture
async def routes(tmp_path: Path) -> AsyncIterator[set[tuple[str, str]]]:
    kennel = build(Settings(data_dir=tmp_path, sandbox_enabled=False))
    try:
        found = api_routes(create_app(kennel))
        # The walk itself must work, or every check below would pass on nothing.
        assert {("POST", "/api/tasks"), ("GET", "/api/workers/{}/files/{}")} <= found
        yield found
    finally:
        await kennel.engines.aclose()
        await kennel.catalog.aclose()
        await kennel.store.close()


def test_every_api_route_has_a_heading_in_the_api_reference(routes: set[tuple[str, str]]) -> None:
    documented = {
        (method, normal(path))
        for heading in headings((DOCS / "api.md").read_text())
        for method, path in ROUTE.findall(heading)
    }
    assert sorted(routes - documented) == [], "routes missing from docs/api.md"


def test_every_api_route_the_docs_name_exists(routes: set[tuple[str, str]]) -> None:
    for path, text in documented_text():
        for method, route in ROUTE.findall(text):
            route = route.rstrip(".,;:")
            where = path.relative_to(ROOT)
            assert (method, normal(route)) in routes, f"{where} names {method} {route}"


def test_every_error_code_is_in_the_api_reference() -> None:
    def classes(kind: type[KennelError]) -> Iterator[type[KennelError]]:
        for sub in kind.__subclasses__():
            yield sub
            yield from classes(sub)

    codes = {kind.code for kind in classes(KennelError)}
    for source in (ROOT / "src").rglob("*.py"):
        codes |= set(re.findall(r"\bcode=\"([a-z_]+)\"", source.read_text()))
        codes |= set(re.findall(r"\"code\": \"([a-z_]+)\"", source.read_text()))
    reference = (DOCS / "api.md").read_text()
    assert sorted(code for code in codes if f"`{code}`" not in reference) == []


# -- CLI ---------------------------------------------------------------------------------------


def commands(command: click.Command = main, path: str = "kennel") -> Iterator[tuple[str, Any]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, f"{path} {name}")


def cli_sections() -> dict[str, str]:
    """docs/cli.md by heading: `## \\`kennel keys create\\`` → that section's text."""
    sections: dict[str, str] = {}
    current = None
    for line in (DOCS / "cli.md").read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            named = re.match(r"`(kennel[^`]*)`", heading[2])
            current = named[1] if named else None
            if current:
                sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


def test_every_cli_command_and_option_is_in_the_cli_reference() -> None:
    sections = cli_sections()
    for path, command in commands():
        assert path in sections, f"docs/cli.md has no section `{path}`"
        for param in command.params:
            for option in (o for o in param.opts if o.startswith("--")):
                assert option in sections[path], f"`{path}` does not document {option}"
    assert sorted(sections.keys() - dict(commands()).keys()) == [], "sections of no command"


# -- links -------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    for heading in headings(text):
        base = anchor = slug(heading)
        number = 0
        while anchor in found:
            number += 1
            anchor = f"{base}-{number}"
        found.add(anchor)
    return found


def broken_links(path: Path, text: str) -> list[str]:
    """Links of a markdown file that leave the repository, lead nowhere or to no heading."""
    prose = INLINE_CODE.sub("", without_code_blocks(text))
    broken = []
    for target in LINK.findall(prose) + REFERENCE.findall(prose):
        if target.startswith(("https://", "http://", "mailto:")):
            continue
        location, _, anchor = target.partition("#")
        resolved = (path.parent / location).resolve() if location else path
        if ":" in location or location.startswith("/") or not resolved.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_docs_link_only_to_files_of_the_repository() -> None:
    for path in markdown_files():
        assert broken_links(path, path.read_text()) == [], path.relative_to(ROOT)


def test_the_link_check_catches_links_that_leave_or_miss() -> None:
    text = (
        "[spec](../shared/spec/handinger-api.md) [gone](docs/nothing.md) [ok](LICENSE) "
        "[web](https://example.com/a) [here](#nowhere) [root](/etc/passwd) [file](file:///x)\n"
        "`[code](../not/checked.md)`\n\n[ref]: ../outside.md\n"
    )
    assert broken_links(ROOT / "README.md", text) == [
        "../shared/spec/handinger-api.md (outside the repository)",
        "docs/nothing.md (no such file)",
        "#nowhere (no such heading)",
        "/etc/passwd (outside the repository)",
        "file:///x (outside the repository)",
        "../outside.md (outside the repository)",
    ]


def test_anchors_follow_githubs_rules() -> None:
    text = "# Kennel\n## `GET /api/workers/{workerId}`\n## Backups & restore\n## Backups & restore"
    assert anchors(text) == {
        "kennel",
        "get-apiworkersworkerid",
        "backups--restore",
        "backups--restore-1",
    }


def test_the_license_is_the_one_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    license_text = (ROOT / "LICENSE").read_text()
    assert project["license"] == "MIT"
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 The Kennel authors\n")
