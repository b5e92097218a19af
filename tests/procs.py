"""Start, watch and stop real server/worker processes from tests.

Generic on purpose (any command, any environment): tests that need a real ``daphne``, a
``manage.py run_worker`` to SIGKILL, or a ``migrate`` against a throwaway database use
these helpers instead of each writing their own Popen/port/timeout code.

    env = child_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", VAR_DIR=str(tmp_path))
    run_manage(["migrate", "--noinput"], env=env)
    port = free_port()
    with ProcessGroup() as procs:
        server = procs.start(
            daphne_args(port), env=env, log_path=tmp_path / "daphne.log",
            ready=lambda: port_open(port),
        )
        ...
        server.kill()          # SIGKILL, by pid
    # every process still running is stopped on exit; a failing test prints their logs

Every process gets its own session (``start_new_session``) so a signal meant for it never
reaches the test runner, and is only ever signalled by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
MANAGE = str(REPO / "manage.py")

# Variables of the test runner that must not leak into a child configured by the test.
_SCRUBBED = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "PYTEST_CURRENT_TEST")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.1f} s")
        time.sleep(interval)


def child_env(**overrides: str | None) -> dict[str, str]:
    """The current environment without the runner's Django/DB variables, plus overrides
    (``None`` removes a variable). Output is unbuffered so logs are complete after a kill."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def manage_args(*args: str) -> list[str]:
    """``python manage.py ARGS`` with the project's interpreter."""
    return [PYTHON, MANAGE, *args]


def daphne_args(port: int, app: str = "config.asgi:application") -> list[str]:
    daphne = str(Path(PYTHON).parent / "daphne")
    return [daphne, "-b", "127.0.0.1", "-p", str(port), app]


def run_manage(
    args: Sequence[str], *, env: Mapping[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a management command to completion; on failure the assertion shows its output."""
    result = subprocess.run(
        manage_args(*args), env=dict(env), cwd=REPO, capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


@dataclass
class Proc:
    """A started process, its log file, and the only ways we signal it (by its pid)."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> int:
        """SIGKILL (a crash: no clean-up runs); returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(10)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(10)


def start_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    ready: Callable[[], Any] | None = None,
    timeout: float = 30.0,
    cwd: Path = REPO,
    name: str | None = None,
) -> Proc:
    """Start ``args`` with stdout+stderr to ``log_path`` and wait until ``ready()`` is truthy.

    If the process exits or is not ready in time it is killed and the error shows its log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            list(args), env=dict(env), cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    proc = Proc(name or Path(args[0]).name, list(args), popen, log_path)
    if ready is None:
        return proc
    deadline = time.monotonic() + timeout
    while not ready():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited {popen.returncode} before ready:\n{proc.log()[-4000:]}")
        if time.monotonic() >= deadline:
            proc.kill()
            raise TimeoutError(f"{proc.name} not ready within {timeout:.0f} s:\n{proc.log()[-4000:]}")
        time.sleep(0.05)
    return proc


def log_contains(path: Path, text: str) -> bool:
    """Readiness helper: the process wrote ``text`` to its log."""
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


class ProcessGroup:
    """Context manager owning the processes a test starts: all are stopped on exit, and
    when the block raised, their log tails are printed (pytest shows them with the failure)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, args: Sequence[str], **kwargs: Any) -> Proc:
        proc = start_process(args, **kwargs)
        self.procs.append(proc)
        return proc

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"----- {p.name} (pid {p.pid})\n{p.log()[-tail:]}" for p in self.procs)

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stop_all()
        if exc_type is not None:
            print(self.logs())


@contextlib.contextmanager
def processes() -> Iterator[ProcessGroup]:
    """``with processes() as group:`` — same as ``with ProcessGroup() as group:``."""
    with ProcessGroup() as group:
        yield group
