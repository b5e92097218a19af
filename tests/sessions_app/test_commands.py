"""Management commands a script or an operator uses."""

import json
import os
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from sessions_app.models import Session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_create_session_prints_json(owner):
    out = StringIO()
    call_command("create_session", "--workflow", "demo", "--owner", "alice", "--title", "Q3", stdout=out)
    data = json.loads(out.getvalue())
    session = Session.objects.get(pk=data["id"])
    assert session.title == "Q3" and session.owner == owner
    assert data["url"] == f"http://127.0.0.1:8000/sessions/{session.pk}/"
    assert data["ws_url"] == f"ws://127.0.0.1:8000/ws/sessions/{session.pk}/"


def test_create_session_errors_are_clear(owner):
    with pytest.raises(CommandError, match="no user"):
        call_command("create_session", "--workflow", "demo", "--owner", "nobody")
    with pytest.raises(CommandError, match="nope"):
        call_command("create_session", "--workflow", "nope", "--owner", "alice")
    assert Session.objects.count() == 0


def test_createsuperuser_noinput_and_demo_user(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", "VAR_DIR": str(tmp_path),
           "DJANGO_SUPERUSER_PASSWORD": "s3cret-pass-word"}
    run = lambda *args: subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run("migrate", "-v0").returncode == 0
    result = run("createsuperuser", "--noinput", "--username", "root", "--email", "r@example.com")
    assert result.returncode == 0, result.stderr
    demo = run("ensure_demo_user")
    assert "demo / " in demo.stdout
    password = (tmp_path / "demo-password.txt").read_text().strip()
    check = run("shell", "-c",
                "from django.contrib.auth import authenticate as a;"
                f"print(bool(a(username='root', password='s3cret-pass-word')), bool(a(username='demo', password='{password}')))")
    assert check.stdout.strip().splitlines()[-1] == "True True"


def test_demo_user_banner_shows_the_address_served(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("ensure_demo_user", "--host", "127.0.0.1", "--port", "8123", stdout=out)
    assert "Meeting room: http://127.0.0.1:8123/ " in out.getvalue()
    out = StringIO()
    call_command("ensure_demo_user", stdout=out)  # the address bin/serve uses by default
    assert "Meeting room: http://127.0.0.1:8000/ " in out.getvalue()


@pytest.mark.parametrize(("env", "address"), [
    ({"PORT": "8123"}, "127.0.0.1:8123"),
    ({"HOST": "0.0.0.0", "PORT": "9001"}, "0.0.0.0:9001"),
    ({}, "127.0.0.1:8000"),
])
def test_bin_serve_announces_the_address_it_serves_on(tmp_path, env, address):
    """bin/serve, run in a copy whose bin/setup and .venv/bin/python only record their
    arguments: the banner command gets the HOST and PORT runserver is given."""
    (tmp_path / "bin").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "bin" / "serve", tmp_path / "bin" / "serve")
    for stub in (tmp_path / "bin" / "setup", tmp_path / ".venv" / "bin" / "python"):
        stub.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
        stub.chmod(0o755)
    calls = tmp_path / "calls.txt"
    clean = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    result = subprocess.run([str(tmp_path / "bin" / "serve")], env={**clean, **env, "CALLS": str(calls)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    host, port = address.rsplit(":", 1)
    lines = calls.read_text().splitlines()
    assert f"manage.py ensure_demo_user --host {host} --port {port}" in lines
    assert lines[-1] == f"manage.py runserver {address}"
