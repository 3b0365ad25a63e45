"""The deployment files stay in step with the repository: the Containerfile copies files that
exist and installs the uv the Makefile pins, and the unit and proxy sites parse (with the real
tools, where this machine has them)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CONTAINERFILE = ROOT / "Containerfile"


def uv_version() -> str:
    found = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found is not None
    return found[1]


def test_the_image_and_the_docs_install_the_uv_the_makefile_pins() -> None:
    for path in (CONTAINERFILE, ROOT / "docs" / "deployment.md"):
        pinned = set(re.findall(r"\buv==(\S+)", path.read_text()))
        assert pinned == {uv_version()}, path.name


def test_the_containerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", CONTAINERFILE.read_text(), re.MULTILINE)
    sources = [source for line in copies for source in line.split()]
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source


def test_the_image_runs_the_python_the_project_requires() -> None:
    bases = re.findall(r"^FROM python:(\d+)\.(\d+)-", CONTAINERFILE.read_text(), re.MULTILINE)
    requires = re.search(
        r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text()
    )
    assert requires is not None and bases
    assert all(tuple(map(int, base)) >= tuple(map(int, requires.groups())) for base in bases)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "kennel.service").read_text()
    assert "ExecStart=/opt/kennel/.venv/bin/kennel serve" in unit
    # The documented install path does not exist here: point it at this checkout's command.
    kennel = Path(sys.executable).with_name("kennel")
    local = tmp_path / "kennel.service"
    local.write_text(unit.replace("/opt/kennel/.venv/bin/kennel", str(kennel)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("caddy") is None, reason="no caddy here")
def test_the_caddy_site_parses() -> None:
    result = subprocess.run(
        ["caddy", "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx here")
def test_the_nginx_site_parses(tmp_path: Path) -> None:
    # nginx checks that certificates exist: stand in a throwaway pair for Let's Encrypt's.
    certificate = ["-subj", "/CN=kennel.example.com", "-keyout", "key.pem", "-out", "cert.pem"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *certificate],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/kennel.example.com/fullchain.pem", "cert.pem")
    site = site.replace("/etc/letsencrypt/live/kennel.example.com/privkey.pem", "key.pem")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
