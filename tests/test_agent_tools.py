"""The worker's tools and its budget, driven by the fake model calling them (spec §16.8)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aisdk import validate_ui_messages, validate_ui_stream
from fakellm import FakeLLM, Text, ToolCall, tool_calls
from kennel.agent.engines import Engines
from kennel.agent.models import ModelCatalog
from kennel.agent.runtime import AgentRuntime, TurnRequest
from kennel.agent.tools import files
from kennel.agent.toolset import WRAP_UP
from kennel.config import Settings
from kennel.files.folder import WorkspaceFolder
from kennel.models import BUDGET_CAPS, Budget, BudgetCaps
from website import LocalSite

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


def _request(text: str, workspace: Path | None, **changes: Any) -> TurnRequest:
    values: dict[str, Any] = {
        "model_name": "openai-chat:fake-model",
        "instructions": "You are Rex.",
        "output_schema": None,
        "input": text,
        "history": [],
        "caps": BUDGET_CAPS[Budget.STANDARD],
        "message_id": "trn_1",
        "folder": None if workspace is None else WorkspaceFolder(workspace),
        "file_url": lambda path: f"http://files.test/{path}",
    }
    values.update(changes)
    return TurnRequest(**values)


def _tool_results(llm: FakeLLM) -> list[str]:
    """What the model was told by each tool, in order (from the last request it got)."""
    return [m["content"] for m in llm.requests[-1]["messages"] if m["role"] == "tool"]


def _sse(chunks: list[dict[str, Any]]) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


async def test_the_file_tools_work_inside_the_workspace(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, live: bool
) -> None:
    (workspace / "notes.txt").write_text("one\ntwo\nthree\nfour\n")
    llm.script(
        "files please",
        tool_calls(ToolCall("read_file", {"path": "notes.txt", "start_line": 2, "end_line": 3})),
        tool_calls(ToolCall("write_file", {"path": "out/report.md", "content": "# Report\nold"})),
        tool_calls(
            ToolCall("edit_file", {"path": "out/report.md", "old_text": "old", "new_text": "new"})
        ),
        tool_calls(ToolCall("list_files", {})),
        tool_calls(ToolCall("delete_file", {"path": "notes.txt"})),
        Text("all done"),
    )
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(_request("files please", workspace, live=live), chunks.append)

    assert result.error is None and result.output_text == "all done"
    assert result.incomplete_reason is None
    read, wrote, edited, listed, deleted = _tool_results(llm)
    assert read == "two\nthree\n"
    assert wrote == "wrote 12 bytes to out/report.md" and edited == "edited out/report.md"
    assert [f["path"] for f in json.loads(listed)["files"]] == ["notes.txt", "out/report.md"]
    assert deleted == "deleted notes.txt"
    assert (workspace / "out/report.md").read_text() == "# Report\nnew"
    assert not (workspace / "notes.txt").exists()
    [changed] = result.files
    assert (changed.path, changed.size, changed.media_type) == (
        "out/report.md",
        12,
        "text/markdown",
    )
    assert result.deleted_files == ("notes.txt",)
    assert result.usage.tool_calls == 5
    files = [c for c in chunks if c["type"] == "file"]
    assert files == [
        {"type": "file", "url": "http://files.test/out/report.md", "mediaType": "text/markdown"}
    ]
    tool_parts = [p for p in result.ui_message["parts"] if p["type"].startswith("tool-")]
    assert [p["type"] for p in tool_parts] == [
        "tool-read_file",
        "tool-write_file",
        "tool-edit_file",
        "tool-list_files",
        "tool-delete_file",
    ]
    assert all(p["providerExecuted"] and p["state"] == "output-available" for p in tool_parts)


async def test_reading_ranges_of_bytes_and_lines(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path
) -> None:
    (workspace / "data.txt").write_text("abcdefghij")
    llm.script(
        "ranges",
        tool_calls(ToolCall("read_file", {"path": "data.txt", "offset": 2, "length": 3})),
        Text("ok"),
    )
    await runtime.run_turn(_request("ranges", workspace), lambda chunk: None)
    assert _tool_results(llm) == ["cde"]


async def test_listing_the_current_folder_and_refusing_huge_reads(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_READ_BYTES", 8)
    (workspace / "sub").mkdir()
    (workspace / "sub/big.txt").write_text("123456789")
    llm.script(
        "look",
        tool_calls(ToolCall("list_files", {"folder": "."})),
        tool_calls(ToolCall("list_files", {"folder": "sub/"})),
        tool_calls(ToolCall("read_file", {"path": "sub/big.txt"})),
        Text("seen"),
    )
    await runtime.run_turn(_request("look", workspace), lambda chunk: None)
    root, sub, big = _tool_results(llm)
    assert (
        json.loads(root)
        == json.loads(sub)
        == {
            "files": [{"path": "sub/big.txt", "size": 9, "mediaType": "text/plain"}],
            "count": 1,
        }
    )
    assert "more than file tools read" in big


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"path": "../outside.txt"}, "invalid file name"),
        ({"path": "/etc/passwd"}, "invalid file name"),
        ({"path": "link/secret.txt"}, "symbolic link"),
        ({"path": "escape.txt"}, "symbolic link"),
        ({"path": "missing.txt"}, "no file"),
    ],
)
async def test_paths_outside_the_workspace_are_refused_and_told_to_the_model(
    runtime: AgentRuntime,
    llm: FakeLLM,
    workspace: Path,
    tmp_path: Path,
    arguments: dict[str, str],
    complaint: str,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (workspace / "link").symlink_to(outside)
    (workspace / "escape.txt").symlink_to(outside / "secret.txt")
    llm.script("sneak", tool_calls(ToolCall("read_file", arguments)), Text("could not"))
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(_request("sneak", workspace), chunks.append)

    assert result.error is None and result.output_text == "could not"
    [told] = _tool_results(llm)
    assert complaint in told and "secret" not in told.replace("secret.txt", "")
    [error] = [c for c in chunks if c["type"] == "tool-output-error"]
    assert complaint in error["errorText"]


async def test_writes_through_a_symlink_are_refused(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.txt"
    target.write_text("untouched")
    (workspace / "report.md").symlink_to(target)
    llm.script(
        "overwrite",
        tool_calls(ToolCall("write_file", {"path": "report.md", "content": "pwned"})),
        tool_calls(ToolCall("delete_file", {"path": "report.md"})),
        Text("refused"),
    )
    result = await runtime.run_turn(_request("overwrite", workspace), lambda chunk: None)
    assert result.output_text == "refused" and result.files == ()
    assert all("symbolic link" in told for told in _tool_results(llm))
    assert target.read_text() == "untouched" and (workspace / "report.md").is_symlink()


async def test_an_edit_must_match_exactly_once(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("x x")
    llm.script(
        "edit",
        tool_calls(ToolCall("edit_file", {"path": "a.txt", "old_text": "x", "new_text": "y"})),
        tool_calls(ToolCall("edit_file", {"path": "a.txt", "old_text": "z", "new_text": "y"})),
        tool_calls(ToolCall("edit_file", {"path": "a.txt", "old_text": "x x", "new_text": "y"})),
        Text("edited"),
    )
    result = await runtime.run_turn(_request("edit", workspace), lambda chunk: None)
    assert _tool_results(llm)[:2] == [
        '{"error":"old_text appears 2 times in a.txt; it must appear exactly once"}',
        '{"error":"old_text does not appear in a.txt; it must appear exactly once"}',
    ]
    assert (workspace / "a.txt").read_text() == "y"
    assert [f.path for f in result.files] == ["a.txt"]


async def test_a_worker_without_a_workspace_is_offered_no_file_tools(
    runtime: AgentRuntime, llm: FakeLLM
) -> None:
    await runtime.run_turn(_request("hello", None), lambda chunk: None)
    assert "tools" not in llm.requests[-1]


async def test_at_the_request_cap_the_tools_go_and_the_worker_answers(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, live: bool
) -> None:
    llm.script(
        "research",
        tool_calls(ToolCall("list_files", {})),
        tool_calls(ToolCall("list_files", {})),
        Text("best answer so far"),
    )
    caps = BudgetCaps(requests=3, tool_calls=None, tokens=None)
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(
        _request("research", workspace, caps=caps, live=live), chunks.append
    )

    assert result.error is None and result.output_text == "best answer so far"
    assert result.incomplete_reason == "budget_exhausted"
    assert result.usage.requests == 3 and result.usage.tool_calls == 2
    first, second, last = llm.requests
    assert "tools" in first and "tools" in second and "tools" not in last
    assert {"role": "system", "content": WRAP_UP} in last["messages"]
    assert WRAP_UP not in json.dumps(second["messages"])
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}


async def test_the_wrap_up_is_not_carried_into_the_next_turn(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path
) -> None:
    llm.script("research", tool_calls(ToolCall("list_files", {})), Text("partial answer"))
    caps = BudgetCaps(requests=2, tool_calls=None, tokens=None)
    first = await runtime.run_turn(_request("research", workspace, caps=caps), lambda c: None)
    assert first.incomplete_reason == "budget_exhausted"
    second = await runtime.run_turn(
        _request("thanks", workspace, history=[first.model_messages]), lambda c: None
    )
    assert second.incomplete_reason is None
    assert WRAP_UP not in json.dumps(llm.requests[-1]["messages"])
    assert "tools" in llm.requests[-1]


async def test_spent_tool_calls_are_refused_then_the_worker_wraps_up(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path
) -> None:
    llm.script(
        "two at once",
        tool_calls(
            ToolCall("write_file", {"path": "a.txt", "content": "a"}),
            ToolCall("write_file", {"path": "b.txt", "content": "b"}),
        ),
        Text("one file written"),
    )
    caps = BudgetCaps(requests=10, tool_calls=1, tokens=None)
    result = await runtime.run_turn(_request("two at once", workspace, caps=caps), lambda c: None)

    assert result.output_text == "one file written"
    assert result.incomplete_reason == "budget_exhausted"
    assert result.usage.tool_calls == 1 and [f.path for f in result.files] == ["a.txt"]
    assert not (workspace / "b.txt").exists()
    assert "budget" in _tool_results(llm)[1]
    assert "tools" not in llm.requests[-1]


@pytest.mark.parametrize(("cap", "wraps_up"), [(1000, False), (250, True)])
async def test_the_token_cap_leaves_room_for_the_wrap_up(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, cap: int, wraps_up: bool
) -> None:
    """Each request costs about 100 tokens (400 characters of instructions): after the first,
    a cap of 250 can't pay for two more, so the second request is the wrap-up."""
    llm.script("tokens", tool_calls(ToolCall("list_files", {})), Text("short answer"))
    caps = BudgetCaps(requests=None, tool_calls=None, tokens=cap)
    request = _request("tokens", workspace, caps=caps, instructions="x" * 400)
    result = await runtime.run_turn(request, lambda c: None)

    assert result.output_text == "short answer" and result.error is None
    assert (result.incomplete_reason == "budget_exhausted") is wraps_up
    assert ("tools" in llm.requests[1]) is not wraps_up


async def test_a_spent_token_budget_stops_the_turn(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path
) -> None:
    llm.script("tokens", tool_calls(ToolCall("list_files", {})), Text("never sent"))
    caps = BudgetCaps(requests=None, tool_calls=None, tokens=50)
    request = _request("tokens", workspace, caps=caps, instructions="x" * 400)
    result = await runtime.run_turn(request, lambda c: None)
    assert result.error is None and result.incomplete_reason == "budget_exhausted"
    assert result.output_text == "" and len(llm.requests) == 1


async def test_the_wrap_up_still_gives_schema_valid_structured_output(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, live: bool
) -> None:
    llm.script(
        "summarize",
        tool_calls(ToolCall("list_files", {})),
        tool_calls(ToolCall("final_result", {"summary": "nothing found yet"})),
    )
    caps = BudgetCaps(requests=2, tool_calls=None, tokens=None)
    result = await runtime.run_turn(
        _request("summarize", workspace, caps=caps, output_schema=SCHEMA, live=live),
        lambda c: None,
    )
    assert result.error is None and result.incomplete_reason == "budget_exhausted"
    assert result.structured_output == {"summary": "nothing found yet"}
    names = [t["function"]["name"] for t in llm.requests[-1]["tools"]]
    assert names == ["final_result"]


@pytest.mark.node
async def test_tool_turns_pass_the_ai_sdk(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path, live: bool
) -> None:
    llm.script(
        "write it",
        tool_calls(ToolCall("write_file", {"path": "r.md", "content": "# r"})),
        tool_calls(ToolCall("read_file", {"path": "missing.md"})),
        Text("written"),
    )
    chunks: list[dict[str, Any]] = []
    result = await runtime.run_turn(_request("write it", workspace, live=live), chunks.append)
    check = validate_ui_stream(_sse(chunks))
    assert check.ok, check.error
    assert check.messages[-1]["parts"] == result.ui_message["parts"]
    assert validate_ui_messages([result.ui_message]).ok


async def test_quiet_turns_record_tool_parts_as_live_ones_do(
    runtime: AgentRuntime, llm: FakeLLM, workspace: Path
) -> None:
    def script() -> None:
        llm.script(
            "mixed",
            tool_calls(ToolCall("write_file", {"path": "r.md", "content": "# r"}, id="c1")),
            tool_calls(ToolCall("read_file", {"path": "missing.md"}, id="c2")),
            tool_calls(ToolCall("read_file", {"wrong": 1}, id="c3")),
            tool_calls(ToolCall("final_result", {"other": "x"}, id="c4")),
            tool_calls(ToolCall("final_result", {"summary": "done"}, id="c5")),
        )

    parts = {}
    for live in (True, False):
        script()
        request = _request("mixed", workspace, output_schema=SCHEMA, live=live)
        result = await runtime.run_turn(request, lambda chunk: None)
        assert result.structured_output == {"summary": "done"}
        parts[live] = [p for p in result.ui_message["parts"] if p["type"].startswith("tool-")]

    assert parts[False] == parts[True]
    states = {p["toolCallId"]: p["state"] for p in parts[False]}
    assert states["c1"] == "output-available"
    assert states["c3"] == "output-error"
    assert states["c5"] == "output-available"


@pytest.fixture
async def equipped(llm: FakeLLM, website: LocalSite) -> AsyncIterator[AgentRuntime]:
    """The runtime with real web and sandbox engines; search is the site's fake SearXNG."""
    settings = Settings(
        model="openai-chat:fake-model",
        openai_base_url=llm.base_url,
        openai_api_key="k",
        search_provider="searxng",
        searxng_url=website.url("/searxng"),
        allow_private_networks="127.0.0.1/32",
    )
    catalog, engines = ModelCatalog(settings), Engines.from_settings(settings)
    try:
        yield AgentRuntime(catalog, model_timeout=10, engines=engines)
    finally:
        await engines.aclose()
        await catalog.aclose()


async def test_fetched_pages_become_sources_once_each(
    equipped: AgentRuntime, llm: FakeLLM, website: LocalSite, live: bool
) -> None:
    article, notes = website.url("/article.html"), website.url("/notes.txt")
    llm.script(
        "read up",
        tool_calls(ToolCall("web_search", {"query": "kennels", "max_results": 1})),
        tool_calls(ToolCall("web_fetch", {"url": article})),
        tool_calls(
            ToolCall("web_fetch", {"url": notes}),
            ToolCall("web_fetch", {"url": article}),
            ToolCall("web_fetch", {"url": website.url("/status/404")}),
        ),
        Text("read"),
    )
    chunks: list[dict[str, Any]] = []
    result = await equipped.run_turn(_request("read up", None, live=live), chunks.append)

    assert result.error is None and result.output_text == "read"
    searched, fetched_article, _, _, missing = _tool_results(llm)
    assert json.loads(searched)["results"][0]["url"] == "https://searx.example/kennel"
    assert "sled teams" in json.loads(fetched_article)["content"].lower()
    assert "404" in missing
    assert [(s.url, s.title) for s in result.sources] == [
        (article, "Kennel field guide"),
        (notes, None),
    ]
    sources = [c for c in chunks if c["type"] == "source-url"]
    assert sources == [
        {
            "type": "source-url",
            "sourceId": result.sources[0].id,
            "url": article,
            "title": "Kennel field guide",
        },
        {"type": "source-url", "sourceId": result.sources[1].id, "url": notes},
    ]
    assert result.usage.tool_calls == 4  # the failed fetch is not counted


async def test_a_source_is_named_by_the_pages_title_not_its_heading(
    equipped: AgentRuntime, llm: FakeLLM, website: LocalSite
) -> None:
    page, title = website.url("/titled/title-and-heading"), "Feeding guide | Kennel Club"
    llm.script("name it", tool_calls(ToolCall("web_fetch", {"url": page})), Text("named"))
    chunks: list[dict[str, Any]] = []
    result = await equipped.run_turn(_request("name it", None), chunks.append)
    assert [(s.url, s.title) for s in result.sources] == [(page, title)]
    assert [c.get("title") for c in chunks if c["type"] == "source-url"] == [title]
    assert json.loads(_tool_results(llm)[0])["title"] == title


async def test_files_the_sandbox_writes_are_the_turns_files(
    equipped: AgentRuntime, llm: FakeLLM, workspace: Path, live: bool
) -> None:
    (workspace / "old.txt").write_text("old")
    program = (
        "import os, pathlib\n"
        "pathlib.Path('out').mkdir()\n"
        "pathlib.Path('out/table.csv').write_text('a,b\\n1,2\\n')\n"
        "os.remove('old.txt')\n"
        "print('done', sorted(os.listdir('.')))\n"
    )
    llm.script("compute", tool_calls(ToolCall("run_python", {"code": program})), Text("computed"))
    chunks: list[dict[str, Any]] = []
    result = await equipped.run_turn(_request("compute", workspace, live=live), chunks.append)

    assert result.error is None and result.output_text == "computed"
    [told] = _tool_results(llm)
    output = json.loads(told)
    assert output["exitCode"] == 0 and output["stdout"] == "done ['out']\n"
    assert output["filesChanged"] == ["out/table.csv"] and output["filesDeleted"] == ["old.txt"]
    assert [(f.path, f.size, f.media_type) for f in result.files] == [
        ("out/table.csv", 8, "text/csv")
    ]
    assert result.deleted_files == ("old.txt",)
    assert [c for c in chunks if c["type"] == "file"] == [
        {"type": "file", "url": "http://files.test/out/table.csv", "mediaType": "text/csv"}
    ]


async def test_without_a_sandbox_run_python_is_not_offered_and_the_reason_is_logged(
    llm: FakeLLM, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        model="openai-chat:fake-model",
        openai_base_url=llm.base_url,
        openai_api_key="k",
        sandbox_bwrap="/nonexistent/bwrap",
    )
    with caplog.at_level(logging.WARNING, logger="kennel.agent.engines"):
        engines = Engines.from_settings(settings)
    assert engines.sandbox is None
    [warning] = [r.getMessage() for r in caplog.records if r.name == "kennel.agent.engines"]
    assert warning.startswith("run_python is not offered: ")
    catalog = ModelCatalog(settings)
    try:
        runtime = AgentRuntime(catalog, model_timeout=10, engines=engines)
        await runtime.run_turn(_request("hello", workspace), lambda chunk: None)
    finally:
        await engines.aclose()
        await catalog.aclose()
    offered = {tool["function"]["name"] for tool in llm.requests[-1]["tools"]}
    assert offered == {
        "web_search",
        "web_fetch",
        "list_files",
        "read_file",
        "write_file",
        "edit_file",
        "delete_file",
    }


async def test_search_results_the_answer_cites_are_sources_too(
    equipped: AgentRuntime, llm: FakeLLM, live: bool
) -> None:
    llm.script(
        "find kennels",
        tool_calls(ToolCall("web_search", {"query": "kennels", "max_results": 2})),
        Text("See https://searx.example/kennel for the details."),
    )
    result = await equipped.run_turn(_request("find kennels", None, live=live), lambda _: None)
    assert result.error is None
    [source] = result.sources
    assert source.url == "https://searx.example/kennel" and source.title

    llm.script(
        "find more kennels",
        tool_calls(ToolCall("web_search", {"query": "kennels", "max_results": 2})),
        Text("I found nothing worth citing."),
    )
    quiet = await equipped.run_turn(_request("find more kennels", None, live=live), lambda _: None)
    assert quiet.sources == ()  # found but not cited: not a source
