"""Every escape an attacker probe tried from `run_python`, tried again: each must fail and leave
the host as it was. Kennel runs as root in CI, so these also show that nothing in the sandbox
is root on the host."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import uuid
from pathlib import Path

import psutil
import pytest

from kennel.files.folder import WorkspaceFolder
from sandboxes import descendants, sandbox_for

AS_ROOT = os.geteuid() == 0
MB = 1024 * 1024


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "workspaces" / "org_1" / "wrk_1"
    folder.mkdir(parents=True)
    return folder


def _lines(stdout: str) -> list[object]:
    return [json.loads(line) for line in stdout.splitlines()]


async def test_code_is_not_root_and_its_files_are_not_roots(
    tmp_path: Path, workspace: Path
) -> None:
    code = (
        "import json, os\n"
        "open('made.txt', 'w').write('x')\n"
        "status = open('/proc/self/status').read().splitlines()\n"
        "print(json.dumps([os.getuid(), os.geteuid(), os.getgroups()]))\n"
        "print(json.dumps([l.split()[1] for l in status if l.startswith('CapEff')]))\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert result.exit_code == 0, result.stderr
    (uid, euid, groups), capabilities = _lines(result.stdout)
    assert uid == euid != 0
    if AS_ROOT:
        assert groups == []
    assert capabilities == ["0000000000000000"]
    owner = (workspace / "made.txt").stat().st_uid
    # The host owner of what the code made: the sandbox user (nobody), never root.
    assert owner == (65534 if AS_ROOT else os.getuid())
    assert owner != 0


async def test_kernel_settings_and_triggers_cannot_be_written(
    tmp_path: Path, workspace: Path
) -> None:
    swappiness = Path("/proc/sys/vm/swappiness")
    before = swappiness.read_text()
    wanted = "61" if before.strip() != "61" else "62"
    code = (
        "import json, os\n"
        "refused = []\n"
        "for target in ['/proc/sys/vm/swappiness', '/proc/sysrq-trigger']:\n"
        "    try:\n"
        f"        open(target, 'w').write({wanted!r} if 'sys/' in target else 'h')\n"
        "    except OSError as error:\n"
        "        refused.append(target)\n"
        "print(json.dumps(refused))\n"
        # Opening for writing changes nothing by itself; anything that opens is a hole.
        "openable = []\n"
        "for folder, folders, files in os.walk('/proc'):\n"
        "    if folder == '/proc':\n"
        "        folders[:] = [f for f in folders if not f.isdigit() and 'self' not in f]\n"
        "    for name in files:\n"
        "        try:\n"
        "            os.close(os.open(os.path.join(folder, name), os.O_WRONLY | os.O_NONBLOCK))\n"
        "            openable.append(os.path.join(folder, name))\n"
        "        except OSError:\n"
        "            pass\n"
        "print(json.dumps(openable))\n"
    )
    try:
        result = await sandbox_for(tmp_path).run_python(code, workspace)
        after = swappiness.read_text()
    finally:
        if swappiness.read_text() != before and AS_ROOT:
            swappiness.write_text(before)
    assert result.exit_code == 0, result.stderr
    refused, openable = _lines(result.stdout)
    assert refused == ["/proc/sys/vm/swappiness", "/proc/sysrq-trigger"]
    assert openable == []
    assert after == before


async def test_host_files_other_workspaces_and_host_paths_stay_hidden(
    tmp_path: Path, workspace: Path
) -> None:
    other = workspace.parent / "wrk_2"
    other.mkdir()
    (other / "secret.txt").write_text("another worker's file")
    (tmp_path / "data" / "kennel.db").write_text("the database")
    targets = ["/etc/shadow", "/etc/passwd", str(other / "secret.txt")]
    targets += [str(tmp_path / "data" / "kennel.db"), str(Path.cwd() / "pyproject.toml")]
    code = (
        "import json, os\n"
        "read = []\n"
        f"for target in {targets!r}:\n"
        "    try:\n"
        "        read.append([target, open(target).read()])\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(read))\n"
        "mounts = [line.split()[4] for line in open('/proc/self/mountinfo')]\n"
        "print(json.dumps(mounts))\n"
        "print(json.dumps(os.listdir('/')))\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert result.exit_code == 0, result.stderr
    read, mount_points, root = _lines(result.stdout)
    assert read == []
    # Everything is mounted at a neutral place: no host folder is its own mount point.
    assert isinstance(mount_points, list) and isinstance(root, list)
    allowed = ("/usr", "/opt/", "/proc", "/dev", "/tmp", "/workspace")
    assert [point for point in mount_points if point != "/" and not point.startswith(allowed)] == []
    assert set(root) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt"} | {
        "proc",
        "dev",
        "tmp",
        "workspace",
    }


async def test_no_network_no_names_no_host_listener(tmp_path: Path, workspace: Path) -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagrams,
    ):
        datagrams.bind(("127.0.0.1", 0))
        tcp, udp = server.getsockname()[1], datagrams.getsockname()[1]
        code = (
            "import json, socket\n"
            "tried = {}\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {tcp}), timeout=3)\n"
            "    tried['tcp'] = 'connected'\n"
            "except OSError as error:\n"
            "    tried['tcp'] = type(error).__name__\n"
            "try:\n"
            "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
            f"        s.sendto(b'query', ('127.0.0.1', {udp}))\n"
            "    tried['udp'] = 'sent'\n"
            "except OSError as error:\n"
            "    tried['udp'] = type(error).__name__\n"
            "try:\n"
            "    socket.getaddrinfo('example.com', 443)\n"
            "    tried['dns'] = 'resolved'\n"
            "except OSError as error:\n"
            "    tried['dns'] = type(error).__name__\n"
            "tried['interfaces'] = [name for _, name in socket.if_nameindex()]\n"
            "print(json.dumps(tried))\n"
        )
        result = await sandbox_for(tmp_path).run_python(code, workspace)
        server.setblocking(False)
        datagrams.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
        with pytest.raises(BlockingIOError):
            datagrams.recv(100)
    assert result.exit_code == 0, result.stderr
    [tried] = _lines(result.stdout)
    # Its own loopback only: nobody listens there, and nothing it sends reaches the host's.
    assert tried == {
        "tcp": "ConnectionRefusedError",
        "udp": "sent",
        "dns": "gaierror",
        "interfaces": ["lo"],
    }


async def test_a_fork_bomb_ends_with_nothing_left(tmp_path: Path, workspace: Path) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_max_processes=16)
    code = (
        "import os, time\n"
        "forked = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "    except OSError:\n"
        "        break\n"
        "    forked += 1\n"
        "print(forked)\n"
    )
    result = await sandbox.run_python(code, workspace)
    assert not result.timed_out
    assert result.exit_code == 0, result.stderr
    # The kernel refuses the 17th process of the sandbox user (the watcher is one of them)...
    assert int(result.stdout) < 16
    # ...and the sleeping children die with the run.
    assert descendants() == []


async def test_memory_of_all_processes_together_is_capped(tmp_path: Path, workspace: Path) -> None:
    # Each process stays under its own limit (256 MB); four of them pass the total (200 MB).
    sandbox = sandbox_for(tmp_path, sandbox_memory_mb=256, sandbox_total_memory_mb=200)
    code = (
        "import os, time\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        block = b'\\x01' * (120 * 1024 * 1024)\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(30)\n"
        "print('survived')\n"
    )
    result = await sandbox.run_python(code, workspace)
    assert not result.timed_out
    assert result.exit_code == 137
    assert "[sandbox: more than 200 MB of memory in all: every process of this run was killed]" in (
        result.stderr
    )
    assert "survived" not in result.stdout
    assert descendants() == []


@pytest.mark.parametrize(
    "hoard",
    [
        # Memory files held open: in no process's resident memory while unmapped.
        "for _ in range(4):\n"
        "    kept.append(os.memfd_create('hoard'))\n"
        "    for _ in range(60):\n"
        "        os.write(kept[-1], megabyte)\n",
        # The sandbox's tmpfs mounts hold what is written there in memory too.
        "for path in ('/dev/shm/hoard', '/tmp/hoard'):\n"
        "    with open(path, 'wb') as hoard:\n"
        "        for _ in range(60):\n"
        "            hoard.write(megabyte)\n"
        "kept.append(megabyte * 40)\n",
        # System V segments outlive their detachment.
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.shmat.restype = ctypes.c_void_p\n"
        "for _ in range(3):\n"
        "    segment = libc.shmget(0, 60 * len(megabyte), 0o1600)\n"
        "    address = libc.shmat(segment, None, 0)\n"
        "    ctypes.memset(address, 1, 60 * len(megabyte))\n"
        "    libc.shmdt(ctypes.c_void_p(address))\n",
    ],
    ids=["memfd", "tmpfs", "sysv"],
)
async def test_memory_outside_processes_counts_too(
    tmp_path: Path, workspace: Path, hoard: str
) -> None:
    # Built a megabyte at a time, the hoard never makes the process itself big: without
    # counting it, 150 MB would never be reached and the run would sleep into its timeout.
    sandbox = sandbox_for(tmp_path, sandbox_memory_mb=512, sandbox_total_memory_mb=150)
    code = f"import os, time\nkept = []\nmegabyte = b'\\x01' * 1024 * 1024\n{hoard}time.sleep(30)\n"
    result = await sandbox.run_python(code, workspace)
    assert not result.timed_out
    assert "more than 150 MB of memory in all" in result.stderr, result.stderr
    assert descendants() == []


async def test_disk_filling_is_stopped_and_rolled_back(tmp_path: Path, workspace: Path) -> None:
    (workspace / "keep.txt").write_text("from before")
    sandbox = sandbox_for(tmp_path, sandbox_workspace_mb=5)
    code = (
        "import os, time\n"
        "os.mkdir('fill')\n"
        "for n in range(60):\n"
        "    open(f'fill/{n}.bin', 'wb').write(bytes(1024 * 1024))\n"
        "    time.sleep(0.02)\n"
        "print('filled')\n"
    )
    result = await sandbox.run_python(code, workspace)
    assert result.exit_code == 137
    assert "[sandbox: the workspace went over 5 MB: every process of this run was killed]" in (
        result.stderr
    )
    assert "the workspace went over its limit of 5 MB: the files it created were removed" in (
        result.stderr
    )
    assert "filled" not in result.stdout
    assert sorted(path.name for path in workspace.iterdir()) == ["keep.txt"]
    assert (workspace / "keep.txt").read_text() == "from before"


async def test_a_locked_folder_hides_nothing_from_the_watcher(
    tmp_path: Path, workspace: Path
) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_workspace_mb=5)
    code = (
        "import os, time\n"
        "os.mkdir('hidden')\n"
        "blob = open('hidden/blob', 'wb')\n"
        "os.chmod('hidden', 0)\n"
        "for _ in range(60):\n"
        "    blob.write(bytes(1024 * 1024))\n"
        "    blob.flush()\n"
        "    time.sleep(0.02)\n"
        "print('hid it')\n"
    )
    result = await sandbox.run_python(code, workspace)
    assert "[sandbox: the workspace went over 5 MB: every process of this run was killed]" in (
        result.stderr
    )
    assert "hid it" not in result.stdout
    assert list(workspace.iterdir()) == []


async def test_a_quick_fill_is_rolled_back_after_the_run(tmp_path: Path, workspace: Path) -> None:
    (workspace / "log.txt").write_text("line\n")
    sandbox = sandbox_for(tmp_path, sandbox_workspace_mb=4)
    # Faster than the watcher's walk: only Kennel's check after the run can see it.
    code = (
        "open('log.txt', 'a').write('x' * 3 * 1024 * 1024)\n"
        "open('new.bin', 'wb').write(bytes(3 * 1024 * 1024))\n"
    )
    result = await sandbox.run_python(code, workspace)
    assert "the workspace went over its limit of 4 MB" in result.stderr
    assert sorted(path.name for path in workspace.iterdir()) == ["log.txt"]
    # Removing new.bin was enough: log.txt keeps what the run appended (3 MB + 5 bytes < 4 MB).
    assert (workspace / "log.txt").stat().st_size == 3 * MB + 5

    grow = "open('log.txt', 'a').write('x' * 3 * 1024 * 1024)\n"
    result = await sandbox.run_python(grow, workspace)
    assert "those it grew cut back" in result.stderr
    assert (workspace / "log.txt").stat().st_size == 3 * MB + 5


async def test_deeply_nested_folders_are_refused_and_removed(
    tmp_path: Path, workspace: Path
) -> None:
    code = (
        "import os\nfor _ in range(2000):\n    os.mkdir('d')\n    os.chdir('d')\nprint('nested')\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert "the workspace nests folders more than 64 deep: the files it created were removed" in (
        result.stderr
    )
    assert list(workspace.iterdir()) == []


async def test_no_process_outlives_its_run(tmp_path: Path, workspace: Path) -> None:
    # A daemon: forked twice, in a session of its own, its output closed, and renamed by
    # exec with a marker, so that it can be found on the host wherever it was reparented.
    marker = f"kennel-daemon-{uuid.uuid4()}"
    later = "import time; time.sleep(1.5); open('/workspace/daemon-was-here', 'w')"
    daemon = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        for fd in (0, 1, 2):\n"
        "            os.close(fd)\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', {later!r}, {marker!r}])\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    sandbox = sandbox_for(tmp_path, sandbox_timeout_seconds=10)
    result = await sandbox.run_python(daemon, workspace)
    assert (result.exit_code, result.stdout) == (0, "parent done\n")
    assert (_marked(marker), descendants()) == ([], [])

    stuck = daemon.replace("print('parent done')\n", "import time\ntime.sleep(60)\n")
    result = await sandbox_for(tmp_path, sandbox_timeout_seconds=1).run_python(stuck, workspace)
    assert result.timed_out
    # Gone when run_python returns, not some time later.
    assert (_marked(marker), descendants()) == ([], [])

    await asyncio.sleep(2)
    assert not (workspace / "daemon-was-here").exists()


def _marked(marker: str) -> list[int]:
    """Processes anywhere on the host whose command line carries the marker."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in (process.info["cmdline"] or []):
            found.append(process.pid)
    return found


async def test_the_watcher_cannot_be_stopped_killed_or_traced(
    tmp_path: Path, workspace: Path
) -> None:
    sandbox = sandbox_for(tmp_path, sandbox_memory_mb=512, sandbox_total_memory_mb=150)
    code = (
        "import ctypes, json, os, signal, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "traced = libc.ptrace(16, 1, None, None)\n"  # PTRACE_ATTACH to the watcher
        "for number in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM, signal.SIGINT):\n"
        "    os.kill(1, number)\n"
        "try:\n"
        "    open('/proc/1/mem', 'rb').read(1)\n"
        "    memory = 'read'\n"
        "except OSError as error:\n"
        "    memory = type(error).__name__\n"
        "print(json.dumps([traced, memory]), flush=True)\n"
        "time.sleep(0.5)\n"
        "blocks = [b'\\x01' * (100 * 1024 * 1024) for _ in range(2)]\n"
        "time.sleep(30)\n"
    )
    result = await sandbox.run_python(code, workspace)
    [[traced, memory]] = _lines(result.stdout)
    assert traced == -1
    assert memory == "PermissionError"
    # Still watching after all that: the 200 MB held together pass the 150 MB total.
    assert not result.timed_out
    assert "more than 150 MB of memory in all" in result.stderr


async def test_kennel_files_stay_editable_and_sandbox_files_usable(
    tmp_path: Path, workspace: Path
) -> None:
    folder = WorkspaceFolder(workspace)
    await folder.write("notes/input.txt", b"from kennel\n")  # 0600, Kennel's own user
    code = (
        "import os\n"
        "with open('notes/input.txt', 'a') as notes:\n"
        "    notes.write('and the sandbox\\n')\n"
        "os.mkdir('private', 0o000)\n"
        "secret = os.open('secret.txt', os.O_WRONLY | os.O_CREAT, 0o000)\n"
        "os.write(secret, b'made inside')\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert result.exit_code == 0, result.stderr
    assert await folder.read("notes/input.txt") == b"from kennel\nand the sandbox\n"
    assert await folder.read("secret.txt") == b"made inside"
    await folder.write("notes/input.txt", b"rewritten by kennel\n")
    again = await sandbox_for(tmp_path).run_python(
        "print(open('notes/input.txt').read(), end='')", workspace
    )
    assert again.stdout == "rewritten by kennel\n"


async def test_no_set_id_file_is_left_on_the_host(tmp_path: Path, workspace: Path) -> None:
    code = (
        "import os, shutil, sys\n"
        "shutil.copy(sys.executable, 'shell')\n"
        "os.chmod('shell', 0o6755)\n"
        "print(oct(os.stat('shell').st_mode & 0o7777))\n"
    )
    result = await sandbox_for(tmp_path).run_python(code, workspace)
    assert (result.exit_code, result.stdout) == (0, "0o6755\n"), result.stderr
    mode = (workspace / "shell").stat().st_mode
    assert mode & (stat.S_ISUID | stat.S_ISGID) == 0
    assert stat.S_IMODE(mode) == 0o755


async def test_planted_links_lead_kennel_nowhere(tmp_path: Path, workspace: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("host file")
    os.chmod(outside / "precious.txt", 0o600)
    before = (outside / "precious.txt").stat()
    code = (
        "import os\n"
        f"os.symlink({str(outside / 'precious.txt')!r}, 'leak')\n"
        f"os.symlink({str(outside)!r}, 'door')\n"
        "os.mkdir('fill')\n"
        "open('fill/big.bin', 'wb').write(bytes(3 * 1024 * 1024))\n"
    )
    # Over the cap, so Kennel both hands the workspace over and rolls the run back.
    result = await sandbox_for(tmp_path, sandbox_workspace_mb=2).run_python(code, workspace)
    assert "the files it created were removed" in result.stderr
    after = (outside / "precious.txt").stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
        before.st_uid,
        before.st_gid,
        0o600,
    )
    assert (outside / "precious.txt").read_text() == "host file"
    assert list(workspace.iterdir()) == []

    # A run within the cap keeps its links; the ownership pass after it does not follow them.
    result = await sandbox_for(tmp_path).run_python(code.replace("3 *", "1 *"), workspace)
    assert result.exit_code == 0, result.stderr
    assert (workspace / "leak").is_symlink()
    after = (outside / "precious.txt").stat()
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert outside.stat().st_uid == before.st_uid


@pytest.mark.skipif(not AS_ROOT, reason="the sandbox user is chosen only when Kennel is root")
async def test_the_sandbox_user_must_exist_and_not_be_root(tmp_path: Path) -> None:
    from kennel.agent.tools.sandbox import Sandbox
    from kennel.config import Settings

    missing = Sandbox(Settings(data_dir=tmp_path, sandbox_user="no-such-kennel-user"))
    assert missing.unavailable_reason and "no user 'no-such-kennel-user'" in (
        missing.unavailable_reason
    )
    root = Sandbox(Settings(data_dir=tmp_path, sandbox_user="0:0"))
    assert root.unavailable_reason and "must not run as root" in root.unavailable_reason
    numeric = Sandbox(Settings(data_dir=tmp_path, sandbox_user="65534:65534"))
    assert numeric.available, numeric.unavailable_reason
