"""Real server processes for tests: start on a free port, log in over HTTP, open WebSockets."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.procs import daphne_args

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "VAR_DIR": str(tmp_path),
        "SCRIPTED_TOKENS_PER_SECOND": "0",
        "TOKEN_COALESCE_MS": "5",
        "WORKER_POLL_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


class Server:
    """A server process (daphne, runserver or uvicorn) bound to 127.0.0.1:port."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while not port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def daphne(env: dict[str, str], tmp_path: Path, name: str = "daphne") -> Server:
    port = free_port()
    return Server(daphne_args(port), env, port, tmp_path / f"{name}.log")


def login(base: str, username: str, password: str) -> str:
    """Log in through Django's login form; returns the sessionid cookie value."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token}
    ).encode()
    opener.open(urllib.request.Request(f"{base}/accounts/login/", data=body), timeout=10).read()
    cookies = {c.name: c.value for c in jar}
    if "sessionid" not in cookies:
        raise RuntimeError("login failed")
    return cookies["sessionid"]


def create_user(env: dict[str, str], username: str, password: str) -> None:
    manage(env, "shell", "-c",
           "from django.contrib.auth import get_user_model as g;"
           f"g().objects.create_user({username!r}, password={password!r})")


def create_session(env: dict[str, str], owner: str, workflow: str = "quick-chat") -> dict[str, Any]:
    return json.loads(manage(env, "create_session", "--workflow", workflow, "--owner", owner))


def ws_headers(server: Server, cookie: str) -> dict[str, str]:
    return {"Cookie": f"sessionid={cookie}", "Origin": server.base}


def ws_url(server: Server, session_id: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/ws/sessions/{session_id}/{query}"


def unpack(frame: dict[str, Any]) -> list[dict[str, Any]]:
    return frame["data"]["events"] if frame["event"] == "batch" else [frame]
