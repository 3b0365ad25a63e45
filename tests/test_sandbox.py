"""The Python sandbox: code runs, writes its workspace and nothing else, sees nothing of the
host, has no network, and its limits, timeout and cancellation really stop it."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kennel.agent.tools.sandbox import Sandbox, SandboxUnavailableError
from kennel.config import Settings
from sandboxes import sandbox_for


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "workspaces" / "wrk_1"
    folder.mkdir(parents=True)
    return folder


async def test_prints_and_exit_codes_come_back(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path)
    result = await sandbox.run_python("import sys\nprint('hello', 6 * 7)\nsys.exit(3)", workspace)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hello 42\n", "")
    assert not (result.timed_out or result.stdout_truncated or result.stderr_truncated)

    failed = await sandbox.run_python("print('before')\n1 / 0", workspace)
    assert failed.exit_code == 1
    assert failed.stdout == "before\n"
    assert "ZeroDivisionError" in failed.stderr


async def test_workspace_is_the_writable_working_directory(tmp_path: Path, workspace: Path) -> None:
    (workspace / "input.csv").write_text("a,b\n1,2\n")
    code = (
        "import os, pathlib\n"
        "rows = pathlib.Path('input.csv').read_text().splitlines()\n"
        "pathlib.Path('out').mkdir()\n"
        "pathlib.Path('out/report.md').write_text(f'{len(rows)} rows in {os.getcwd()}')\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert result.exit_code == 0, result.stderr
    assert (workspace / "out" / "report.md").read_text() == "2 rows in /workspace"


async def test_nothing_outside_the_workspace_is_writable(tmp_path: Path, workspace: Path) -> None:
    home = Path.home()
    targets = ["/usr/kennel-probe", "/etc/kennel-probe", "/kennel-probe", f"{home}/kennel-probe"]
    targets += [str(workspace.parent / "kennel-probe"), str(tmp_path / "kennel-probe")]
    code = (
        f"for target in {targets!r}:\n"
        "    try:\n"
        "        open(target, 'w').write('x')\n"
        "        print('wrote', target)\n"
        "    except OSError as error:\n"
        "        print('refused', target, type(error).__name__)\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("refused") == len(targets), result.stdout
    assert not [target for target in targets if Path(target).exists()]


async def test_the_host_and_its_secrets_are_hidden(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox-secret")
    monkeypatch.setenv("KENNEL_SEARCH_API_KEY", "search-sandbox-secret")
    (tmp_path / "data" / "kennel.db").write_text("other workers' data")
    home = Path.home()
    interpreter = Path(sys.base_prefix).resolve()
    # The interpreter's own folder may be bound where it lives (under the home with pyenv).
    home_entries = [str(p) for p in home.iterdir() if not interpreter.is_relative_to(p)]
    hidden = [__file__, str(Path.cwd()), "/work", str(tmp_path / "data" / "kennel.db")]
    hidden += home_entries
    code = (
        "import json, os\n"
        "print(json.dumps(sorted(os.environ.items())))\n"
        f"print(json.dumps([path for path in {hidden!r} if os.path.exists(path)]))\n"
        "print(json.dumps(os.listdir('/')))\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert result.exit_code == 0, result.stderr
    environment, visible, root = (json.loads(line) for line in result.stdout.splitlines())
    assert "secret" not in json.dumps(environment)
    assert not [name for name, _ in environment if name.startswith(("KENNEL_", "OPENAI_"))]
    assert visible == []
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "proc", "tmp"}
    assert set(root) - system - {"workspace", "opt", interpreter.parts[1]} == set()


async def test_there_is_no_network(tmp_path: Path, workspace: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "    print('connected')\n"
            "except OSError as error:\n"
            "    print('no network:', error)\n"
        )
        result = await sandbox_for(tmp_path).run_python(code, workspace)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.stdout.startswith("no network:"), result.stdout


async def test_wall_timeout_kills_an_endless_loop(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_timeout_seconds=1)
    result = await sandbox.run_python(
        "print('looping', flush=True)\nwhile True:\n    pass", workspace
    )
    assert result.timed_out
    assert result.exit_code is None
    assert result.stdout == "looping\n"


async def test_cpu_limit_stops_a_busy_process(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_cpu_seconds=1)
    result = await sandbox.run_python("while True:\n    pass", workspace)
    assert not result.timed_out
    assert result.exit_code is not None and result.exit_code > 128
    assert "CPU time limit of 1 s" in result.stderr


async def test_memory_limit_stops_a_big_allocation(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_memory_mb=256)
    code = "block = bytearray(1024 * 1024 * 1024)\nprint('allocated')"
    result = await sandbox.run_python(code, workspace)
    assert result.exit_code == 1
    assert "MemoryError" in result.stderr
    assert "allocated" not in result.stdout


async def test_file_size_limit_stops_a_big_file(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_max_file_mb=1)
    result = await sandbox.run_python(
        "open('big.bin', 'wb').write(bytes(3 * 1024 * 1024))", workspace
    )
    assert result.exit_code == 1
    assert "File too large" in result.stderr
    assert (workspace / "big.bin").stat().st_size <= 1024 * 1024


async def test_long_output_keeps_its_head_and_tail(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_output_bytes=1024)
    code = "print('BEGIN' + 'x' * 10_000 + 'END')\nimport sys\nprint('oops', file=sys.stderr)"
    result = await sandbox.run_python(code, workspace)
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.stdout.startswith("BEGIN")
    assert result.stdout.endswith("END\n")
    kept = 1024
    printed = len("BEGIN") + 10_000 + len("END\n")
    assert f"\n[... {printed - kept} bytes truncated ...]\n" in result.stdout
    assert result.stderr == "oops\n"


async def test_a_fork_bomb_is_contained(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_max_processes=8)
    code = (
        "import os, time\n"
        "forked = 0\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(20)\n"
        "            os._exit(0)\n"
        "        forked += 1\n"
        "        time.sleep(0.01)\n"
        "except OSError as error:\n"
        "    print('fork refused:', error)\n"
        "print('forked', forked, flush=True)\n"
    )
    result = await sandbox.run_python(code, workspace)
    assert not result.timed_out
    assert "forked 100" not in result.stdout
    # Where the kernel enforces RLIMIT_NPROC the fork fails; for root the watcher kills all.
    assert "fork refused" in result.stdout or "more than 8 processes" in result.stderr


async def test_cancel_kills_the_sandbox_at_once(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path)
    code = "import pathlib, time\npathlib.Path('started').touch()\ntime.sleep(60)"
    running = asyncio.create_task(sandbox.run_python(code, workspace))
    async with asyncio.timeout(20):
        while not (workspace / "started").exists():
            await asyncio.sleep(0.02)
    processes = psutil.Process().children(recursive=True)
    assert len(processes) >= 3  # bwrap, its init in the sandbox, the watcher, the code
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not psutil.pid_exists(processes[0].pid)  # bwrap itself is reaped already
    async with asyncio.timeout(10):
        while alive := list(_alive(processes)):
            await asyncio.sleep(0.02)
    assert alive == []


def _alive(processes: list[psutil.Process]) -> Iterator[psutil.Process]:
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                yield process
        except psutil.NoSuchProcess:
            pass


async def test_without_bwrap_there_is_no_sandbox(tmp_path: Path, workspace: Path) -> None:
    missing = Sandbox(Settings(data_dir=tmp_path, sandbox_bwrap=str(tmp_path / "no-bwrap")))
    assert not missing.available
    assert missing.unavailable_reason and "bwrap not found" in missing.unavailable_reason
    with pytest.raises(SandboxUnavailableError):
        await missing.run_python("open('ran', 'w')", workspace)
    assert not (workspace / "ran").exists()

    broken = Sandbox(Settings(data_dir=tmp_path, sandbox_bwrap="false"))
    assert not broken.available
    assert broken.unavailable_reason and "does not work" in broken.unavailable_reason

    off = Sandbox(Settings(data_dir=tmp_path, sandbox_enabled=False))
    assert (off.available, off.unavailable_reason) == (
        False,
        "turned off (KENNEL_SANDBOX_ENABLED=false)",
    )
