"""What a turn's tools work with and what they leave behind: the per-turn deps of the agent.

The runtime knows nothing of storage or the workspace store; the services layer hands it a
`Folder` (the worker's workspace) and a way to link to files, and reads back the sources the
worker fetched and the files it changed once the turn is over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

from kennel.agent.stream import Chunk
from kennel.agent.tools.sandbox import SandboxResult
from kennel.agent.tools.web import FetchedPage, SearchResult
from kennel.models import BudgetCaps, JSONObject, Source, Usage, WorkspaceFile

FILE_TOOLS = frozenset({"list_files", "read_file", "write_file", "edit_file", "delete_file"})


class Folder(Protocol):
    """A worker's workspace, confined: paths are relative and never leave it."""

    @property
    def root(self) -> Path: ...

    async def list_files(self, prefix: str = "") -> list[WorkspaceFile]: ...

    async def stat(self, path: str) -> WorkspaceFile | None: ...

    async def read(self, path: str) -> bytes: ...

    async def write(self, path: str, data: bytes) -> WorkspaceFile: ...

    async def delete(self, path: str) -> None: ...

    async def fingerprints(self) -> dict[str, tuple[int, int]]: ...


class Searcher(Protocol):
    """Finds pages on the web; failures raise `ToolFailed` with a message for the model."""

    async def search(self, query: str, max_results: int = 10) -> list[SearchResult]: ...


class Fetcher(Protocol):
    """Reads one page for the model; failures raise `ToolFailed`."""

    async def fetch(self, url: str) -> FetchedPage: ...


class CodeRunner(Protocol):
    """Runs Python with a workspace as its writable working directory, sandboxed."""

    async def run_python(self, code: str, workspace: Path) -> SandboxResult: ...


def source_id(url: str) -> str:
    """A source's id, derived from its URL so that every turn of a task gives it the same one."""
    return "src_" + hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass
class Toolbox:
    """One turn's tools: what they may use, how much, and what they did (sources, files)."""

    caps: BudgetCaps
    folder: Folder | None = None
    file_url: Callable[[str], str] = lambda path: path
    offered: frozenset[str] = frozenset()
    search: Searcher | None = None
    fetcher: Fetcher | None = None
    sandbox: CodeRunner | None = None
    """Names of the tools this turn may offer the model (outside the wrap-up)."""
    sources: dict[str, Source] = field(default_factory=dict)
    """Pages fetched successfully, by URL, in fetch order."""
    found: dict[str, str] = field(default_factory=dict)
    """Search results (URL -> title): they become sources when the answer cites them."""
    changed: dict[str, WorkspaceFile] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    tool_calls_started: int = 0
    wrapping_up: bool = False
    """The budget allows one last model request: no tools, write the best answer (§16.8)."""

    def state(self) -> JSONObject:
        """What the tools did so far, as JSON, for a run that takes the turn over."""
        return {
            "toolCallsStarted": self.tool_calls_started,
            "wrappingUp": self.wrapping_up,
            "sources": [[s.id, s.url, s.title] for s in self.sources.values()],
            "found": self.found,
            "changed": [
                [f.path, f.size, f.media_type, f.updated_at.timestamp()]
                for f in self.changed.values()
            ],
            "deleted": sorted(self.deleted),
        }

    def restore(self, state: JSONObject) -> None:
        """Take up where `state` (see `state()`) left off."""
        self.tool_calls_started = state["toolCallsStarted"]
        self.wrapping_up = state["wrappingUp"]
        self.sources = {url: Source(id_, url, title) for id_, url, title in state["sources"]}
        self.found = dict(state["found"])
        self.changed = {
            path: WorkspaceFile(path, size, media_type, datetime.fromtimestamp(stamp, UTC))
            for path, size, media_type, stamp in state["changed"]
        }
        self.deleted = set(state["deleted"])

    def add_source(self, url: str, title: str | None) -> list[Chunk]:
        """Record a fetched page; the chunk to stream, unless the turn already cited it."""
        if url in self.sources:
            return []
        source = Source(source_id(url), url, title or None)
        self.sources[url] = source
        chunk: Chunk = {"type": "source-url", "sourceId": source.id, "url": url}
        if source.title is not None:
            chunk["title"] = source.title
        return [chunk]

    def add_search_results(self, results: Iterable[tuple[str, str]]) -> None:
        """Remember what a search found, as (url, title) pairs."""
        for url, title in results:
            self.found.setdefault(url, title)

    def cite_found(self, answer: str) -> None:
        """Add the search results the answer cites (names by URL) to the turn's sources."""
        for url, title in self.found.items():
            if url not in self.sources and url in answer:
                self.sources[url] = Source(source_id(url), url, title or None)

    def add_file(self, file: WorkspaceFile) -> list[Chunk]:
        """Record a file the turn created or changed; the chunk to stream the first time."""
        first = file.path not in self.changed
        self.changed[file.path] = file
        self.deleted.discard(file.path)
        if not first:
            return []
        return [{"type": "file", "url": self.file_url(file.path), "mediaType": file.media_type}]

    def remove_file(self, path: str) -> None:
        path = str(PurePosixPath(path))
        self.changed.pop(path, None)
        self.deleted.add(path)

    def take_tool_call(self) -> bool:
        """Count a tool call about to run; False when the budget has none left for it."""
        limit = self.caps.tool_calls
        if limit is not None and self.tool_calls_started >= limit:
            return False
        self.tool_calls_started += 1
        return True

    def must_wrap_up(self, spent: Usage, last_size: int) -> bool:
        """Whether the next model request has to be the last one of the turn.

        It is when it is the last request the cap allows, when the tool calls are spent, or when
        the tokens left could not pay for two more requests the size of the last one
        (`last_size`: its input and output tokens).
        """
        caps = self.caps
        if caps.requests is not None and spent.requests + 1 >= caps.requests:
            return True
        if caps.tool_calls is not None and self.tool_calls_started >= caps.tool_calls:
            return True
        return caps.tokens is not None and spent.tokens + 2 * last_size > caps.tokens

    def tokens_spent(self, spent: Usage) -> bool:
        return self.caps.tokens is not None and spent.tokens >= self.caps.tokens
