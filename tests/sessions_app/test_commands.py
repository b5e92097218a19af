"""Management commands a script or an operator uses."""

import json
import os
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
