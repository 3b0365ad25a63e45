"""A workspace's listing: a small one on the event loop, a large one in a thread, the same
files either way (symbolic links neither followed nor listed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kennel.files import folder as folder_module
from kennel.files.folder import LISTED_ON_THE_LOOP, WorkspaceFolder


def _tree(root: Path, outside: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.csv").write_text("b,c")
    (root / "sub" / "deeper" / "c.md").write_text("# c")
    (outside / "secret.txt").write_text("s")
    (root / "link-to-folder").symlink_to(outside, target_is_directory=True)
    (root / "link-to-file.txt").symlink_to(outside / "secret.txt")


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls the folder hands to a thread."""
    calls: list[str] = []

    async def to_thread(call: Callable[..., Any], *args: Any) -> Any:
        calls.append(getattr(call, "__name__", repr(call)))
        return call(*args)

    monkeypatch.setattr(folder_module.asyncio, "to_thread", to_thread)
    return calls


async def test_a_small_workspace_is_listed_on_the_loop(tmp_path: Path, threads: list[str]) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _tree(root, outside)
    files = await WorkspaceFolder(root).list_files()
    assert [file.path for file in files] == ["a.txt", "sub/b.csv", "sub/deeper/c.md"]
    assert [file.size for file in files] == [1, 3, 3]
    assert [file.path for file in await WorkspaceFolder(root).list_files("sub/")] == [
        "sub/b.csv",
        "sub/deeper/c.md",
    ]
    assert threads == []


async def test_a_large_workspace_is_listed_in_a_thread(tmp_path: Path, threads: list[str]) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _tree(root, outside)
    many = root / "many"
    many.mkdir()
    for index in range(LISTED_ON_THE_LOOP):
        (many / f"{index:03}.txt").write_text("x")
    files = await WorkspaceFolder(root).list_files()
    assert threads == ["_list"]
    paths = [file.path for file in files]
    assert paths[:3] == ["a.txt", "many/000.txt", "many/001.txt"]
    assert len(paths) == LISTED_ON_THE_LOOP + 3
    assert not any("link" in path or "secret" in path for path in paths)


async def test_a_folder_that_cannot_be_read_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    (root / "locked").mkdir(parents=True)
    (root / "open.txt").write_text("o")
    (root / "locked" / "hidden.txt").write_text("h")
    scandir = folder_module.os.scandir

    def refusing(path: Any) -> Any:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", refusing)
    assert [file.path for file in await WorkspaceFolder(root).list_files()] == ["open.txt"]
    fingerprints = await asyncio.wait_for(WorkspaceFolder(root).fingerprints(), 5)
    assert fingerprints == {"open.txt": (1, (root / "open.txt").stat().st_mtime_ns)}
