"""A throw-away PostgreSQL server for tests: initdb + pg_ctl in a temporary directory on a free
loopback port, one database, trust authentication; stopped and removed afterwards.

The server refuses to run as root, so under root the binaries run as the ``postgres`` user
(``runuser``). Tests that use :func:`postgres_url` are skipped with a reason when the binaries
(Debian's ``postgresql`` package) or that user are absent.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DATABASE = "ganbench"


def find_bin(name: str) -> str | None:
    """``name`` on PATH or in the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    for folder in reversed(versions):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skip_reason() -> str | None:
    """Why no server can be started here, or None."""
    missing = [b for b in ("initdb", "pg_ctl", "createdb") if find_bin(b) is None]
    if missing:
        return f"PostgreSQL binaries {missing} not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start the server as 'postgres'"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install ganbench[postgres])"
    return None


@contextmanager
def postgres_url() -> Iterator[str]:
    """Start a server, create the database, yield its SQLAlchemy URL; always stop and remove it."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="ganbench-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(find_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(find_bin("pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=50", "start")
        run(find_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, find_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
