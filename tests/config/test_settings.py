"""Settings read from the environment; DEBUG=0 passes Django's deployment checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=60)


def test_check_deploy_is_clean_with_debug_off(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DEBUG": "0", "SECRET_KEY": "x" * 20 + "a-long-random-secret-key-for-tests-0987654321",
             "ALLOWED_HOSTS": "meet.example.com", "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_debug_off_without_secret_key_refuses_to_start(tmp_path):
    result = run_python("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()",
                        DEBUG="0", SECRET_KEY="", VAR_DIR=str(tmp_path))
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_environment_switches_database_and_channel_layer(tmp_path):
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings';"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'],"
        " s.CHANNEL_LAYERS['default']['BACKEND'], s.ALLOWED_HOSTS)"
    )
    result = run_python(code, DATABASE_URL="postgres://u:p@127.0.0.1:5432/meet",
                        REDIS_URL="redis://127.0.0.1:6379/3", ALLOWED_HOSTS="a.example,b.example",
                        VAR_DIR=str(tmp_path))
    assert result.stdout.split() == [
        "django.db.backends.postgresql", "meet", "channels_redis.pubsub.RedisPubSubChannelLayer",
        "['a.example',", "'b.example']",
    ]
    core = run_python(code, REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYER="core",
                      VAR_DIR=str(tmp_path))
    assert core.stdout.split()[2] == "channels_redis.core.RedisChannelLayer"
    default = run_python(code, VAR_DIR=str(tmp_path), DATABASE_URL="", REDIS_URL="")
    engine, name, layer, _ = default.stdout.split(maxsplit=3)
    assert engine == "django.db.backends.sqlite3" and name.endswith("db.sqlite3")
    assert layer == "realtime.layer.InMemoryLayer"  # Channels' in-memory layer, swept once a second


LOG_EVERY_KIND = """
import logging, os
os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'
import django
django.setup()  # configures logging from settings.LOGGING, as manage.py runserver does
logging.getLogger('django.channels.server').info('HTTP GET / 302 [0.02, 127.0.0.1:1]')  # daphne's runserver
logging.getLogger('django.utils.autoreload').info('Watching for file changes with StatReloader')
logging.getLogger('django.request').warning('Not Found: /nowhere')
logging.getLogger('django.server').info('"GET / HTTP/1.1" 302 0')  # Django's own dev server
logging.getLogger('realtime.hub').warning('hub: receive failed')
logging.getLogger('elsewhere').warning('a library speaks')
"""


@pytest.mark.parametrize("debug", ["1", "0"])
def test_every_log_record_is_written_once(tmp_path, debug):
    """Django gives its ``django`` logger a console handler of its own (DEBUG only) that also
    propagates to the root console handler of settings.LOGGING: under runserver every request
    line was written twice."""
    env = {"DEBUG": debug, "VAR_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    if debug == "0":
        env.update(SECRET_KEY="x" * 20 + "a-long-random-secret-key-for-tests-0987654321",
                   ALLOWED_HOSTS="meet.example.com")
    result = run_python(LOG_EVERY_KIND, **env)
    assert result.returncode == 0, result.stderr
    for line in ("HTTP GET / 302", "Watching for file changes", "Not Found: /nowhere",
                 '"GET / HTTP/1.1" 302', "hub: receive failed", "a library speaks"):
        assert result.stderr.count(line) == 1, (line, result.stderr)


@pytest.mark.django_db(transaction=True)
async def test_lifespan_shutdown_stops_the_embedded_executor(settings):
    """Under uvicorn (lifespan), the process's runs are handed over at shutdown, not cut."""
    import asyncio

    from config.asgi import application
    from workflows.worker import embedded_executor

    settings.WORKFLOW_EXECUTOR = "embedded"
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []
    started = asyncio.Event()

    async def send(message: dict) -> None:
        sent.append(message)
        started.set()

    await inbox.put({"type": "lifespan.startup"})
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(application({"type": "lifespan"}, inbox.get, send))
    await asyncio.wait_for(started.wait(), 5)
    executor = embedded_executor.instances.get(loop)
    await asyncio.wait_for(executor.starting, 5)
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 10)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert executor is not None and executor.stopping
    assert loop not in embedded_executor.instances


def test_metrics_allow_list_is_read_and_checked(tmp_path):
    code = ("import os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings';"
            "from django.conf import settings as s; print(s.METRICS_ALLOWED_IPS)")
    assert run_python(code, VAR_DIR=str(tmp_path), METRICS_ALLOWED_IPS="").stdout.strip() == "[]"
    listed = run_python(code, VAR_DIR=str(tmp_path), METRICS_ALLOWED_IPS="127.0.0.1, 10.0.0.0/8")
    assert listed.stdout.strip() == "['127.0.0.1', '10.0.0.0/8']"
    bad = run_python(code, VAR_DIR=str(tmp_path), METRICS_ALLOWED_IPS="127.0.0.1,localhost")
    assert bad.returncode != 0
    assert "METRICS_ALLOWED_IPS: 'localhost' is not an IP address or network" in bad.stderr


def test_a_local_scraper_reads_metrics_over_http_with_debug_off(tmp_path):
    """As docs/operations.md sets up a bin/prod deployment: no redirect to HTTPS for /metrics."""
    code = ("import os, django; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup();"
            "from django.test import Client; c = Client(REMOTE_ADDR='127.0.0.1', HTTP_HOST='127.0.0.1:8001');"
            "print(c.get('/metrics').status_code, c.get('/sessions/').status_code,"
            " Client(REMOTE_ADDR='192.0.2.9', HTTP_HOST='127.0.0.1:8001').get('/metrics').status_code)")
    result = run_python(code, DEBUG="0", SECRET_KEY="x" * 50, VAR_DIR=str(tmp_path),
                        ALLOWED_HOSTS="meet.example.com,127.0.0.1", METRICS_ALLOWED_IPS="127.0.0.1")
    assert result.stdout.split() == ["200", "301", "403"], result.stderr
