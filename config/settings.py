"""Settings: safe local defaults, everything that differs per deployment read from the environment.

Embedded default (no variable set): SQLite file under var/, in-memory channel layer, the
scripted provider, runs executed inside the web process. Set DATABASE_URL, REDIS_URL and
the LLM_* variables to switch to PostgreSQL, channels-redis and a real provider.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.log import DEFAULT_LOGGING

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


DEBUG = env_bool("DEBUG", True)
_DEV_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production-0123456789abcdefghij"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_KEY if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG=0")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "sessions_app",
    "realtime",
    "workflows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

VAR_DIR.mkdir(parents=True, exist_ok=True)
_DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        _DATABASE_URL,
        # SQLite: keep each thread's connection (opening one per run write was a third of
        # the database thread with 200 sessions running; docs/PERFORMANCE.md). A server
        # database: as its pooler and bin/prod (60) decide.
        conn_max_age=env_int("DB_CONN_MAX_AGE", 600 if _DATABASE_URL.startswith("sqlite") else 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the page read while a run writes; IMMEDIATE avoids lock-upgrade deadlocks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file (not :memory:) so server threads share it; one per test run so runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# With REDIS_URL, channels_redis's pub/sub layer by default: push delivery, where the core
# layer needs four sequential Redis round trips per received message (a 10-minute soak had
# p99 31 s with it, 0.4 s with pub/sub: docs/RELIABILITY.md B10); a blocking read that never
# times out on an idle channel (B4); its connection subscribes again after a reconnect (B3).
# It is at-most-once: the hub refills every seq gap from the event log and runners re-read
# the session at each lease renewal, so a message lost in an outage is only late.
# CHANNEL_LAYER=core selects channels_redis's list-based core layer instead.
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "").strip().lower() or "pubsub"
if CHANNEL_LAYER not in {"pubsub", "core"}:
    raise ImproperlyConfigured(f"CHANNEL_LAYER must be pubsub or core, not {CHANNEL_LAYER!r}")
# redis-py 8 caps a pool at 100 connections (MaxConnectionsError under many handshakes).
REDIS_HOST = {"address": REDIS_URL, "max_connections": env_int("REDIS_MAX_CONNECTIONS", 1000)}
if REDIS_URL and CHANNEL_LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_HOST]},
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8's default socket_timeout (5 s) equals the layer's BZPOPMIN wait,
                # so an idle receive raised; the read must outlast the wait.
                "hosts": [{**REDIS_HOST, "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 15.0)}],
                # Group messages reach one subscription per process (the hub), so the
                # capacity is per process, not per viewer; set high because losing one
                # means a replay from the event log.
                "capacity": 10000,
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layer.InMemoryLayer",  # sweeps expiry once a second
            "CONFIG": {"capacity": 10000, "expiry": 60, "group_expiry": 86400},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/sessions/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# WhiteNoise serves static files from every ASGI server (daphne, uvicorn), not only runserver.
# Finders let it serve straight from static/ without collectstatic.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)

# --- deployment hardening (DEBUG=0) ------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Django's defaults (DEFAULT_LOGGING: "django.server", mail to ADMINS), except that every record
# is written by one handler, the root "console": Django's own "console" handler sat on the
# "django" logger (DEBUG only) while its records also propagated to the root one, so under
# runserver each of daphne's request lines (logger django.channels.server) came out twice.
LOGGING = {
    **DEFAULT_LOGGING,
    "handlers": {**DEFAULT_LOGGING["handlers"], "console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        **DEFAULT_LOGGING["loggers"],
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
        "realtime": {"level": os.environ.get("LOG_LEVEL", "INFO")},
        "workflows": {"level": os.environ.get("LOG_LEVEL", "INFO")},
    },
}

# --- realtime --------------------------------------------------------------------
WS_IDLE_TIMEOUT = env_float("WS_IDLE_TIMEOUT", 60.0)  # seconds without any client frame
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 64 * 1024)
WS_RATE_PER_SECOND = env_float("WS_RATE_PER_SECOND", 20.0)  # commands, token bucket
WS_RATE_BURST = env_int("WS_RATE_BURST", 40)
WS_RATE_STRIKES = env_int("WS_RATE_STRIKES", 20)  # rate_limited errors before close 4429
WS_MAX_SOCKETS_PER_USER = env_int("WS_MAX_SOCKETS_PER_USER", 20)
API_TOKEN_RATE_PER_MINUTE = env_int("API_TOKEN_RATE_PER_MINUTE", 120)  # per token, per process
WS_SEND_BUFFER_EVENTS = env_int("WS_SEND_BUFFER_EVENTS", 20000)  # backlog before close 4409
WS_BATCH_MAX_EVENTS = env_int("WS_BATCH_MAX_EVENTS", 200)
# Frames the server sends stay under these (daphne refuses to send a frame over its 1 MiB
# message limit): a batch is cut at WS_BATCH_MAX_BYTES, a bigger snapshot becomes the empty
# room plus the whole log (realtime/snapshots.py).
WS_BATCH_MAX_BYTES = env_int("WS_BATCH_MAX_BYTES", 256 * 1024)
WS_SNAPSHOT_MAX_BYTES = env_int("WS_SNAPSHOT_MAX_BYTES", 512 * 1024)
REPLAY_MAX_EVENTS = env_int("REPLAY_MAX_EVENTS", 100000)  # further behind -> resync snapshot
EVENT_FLUSH_MAX = env_int("EVENT_FLUSH_MAX", 2000)  # events per batched insert

# --- workflows -------------------------------------------------------------------
WORKFLOW_DIR = Path(os.environ.get("WORKFLOW_DIR") or BASE_DIR / "workflows" / "definitions")
# "embedded": the web process runs sessions itself; "worker": only `manage.py run_worker`.
WORKFLOW_EXECUTOR = os.environ.get("WORKFLOW_EXECUTOR", "embedded")
WORKER_LEASE_SECONDS = env_float("WORKER_LEASE_SECONDS", 15.0)
WORKER_POLL_SECONDS = env_float("WORKER_POLL_SECONDS", 1.0)
SCRIPTED_TOKENS_PER_SECOND = env_float("SCRIPTED_TOKENS_PER_SECOND", 30.0)
TOKEN_COALESCE_MS = env_float("TOKEN_COALESCE_MS", 50.0)
PARTIAL_SAVE_SECONDS = env_float("PARTIAL_SAVE_SECONDS", 1.0)
USAGE_INTERVAL_SECONDS = env_float("USAGE_INTERVAL_SECONDS", 5.0)
LLM_PROVIDER = os.environ.get("LLM_PROVIDER", "")  # "" = as each workflow says; or scripted/openai
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "")
LLM_TIMEOUT_SECONDS = env_float("LLM_TIMEOUT_SECONDS", 60.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2)
# Remote AG-UI agents (provider: agui, docs/engine.md): only these hosts may be called
# (exact names, ".example.com" for a domain and its subdomains; empty = none). Redirects are
# never followed; each response is bounded in size and in silence (connect/read timeout).
AGUI_AGENT_ALLOWED_HOSTS = env_list("AGUI_AGENT_ALLOWED_HOSTS", "")
AGUI_AGENT_TIMEOUT_SECONDS = env_float("AGUI_AGENT_TIMEOUT_SECONDS", 60.0)
AGUI_AGENT_MAX_RESPONSE_BYTES = env_int("AGUI_AGENT_MAX_RESPONSE_BYTES", 10 * 1024 * 1024)
# MCP servers over streamable HTTP (tools, docs/engine.md): only these hosts, same syntax;
# the SDK's client follows no redirect; each call is bounded by its tool's timeout and cap.
MCP_ALLOWED_HOSTS = env_list("MCP_ALLOWED_HOSTS", "")

# --- operations (docs/operations.md) ---------------------------------------------------
# /metrics (Prometheus) is served to active staff users and to clients whose own address
# (REMOTE_ADDR, never a forwarded header) is in these addresses or networks, e.g.
# "127.0.0.1,::1" or "10.0.0.0/8". Empty by default: behind a reverse proxy on the same host
# every request comes from 127.0.0.1, so allowing it by default would serve everyone.
# Several processes report together when PROMETHEUS_MULTIPROC_DIR is set in their
# environment before they start (bin/prod does): see realtime/metrics.py.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "")
# A scraper on the host reads a web process's own port over plain HTTP; with DEBUG=0 it would
# be redirected to HTTPS. Access is still staff or the allow-list.
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
for _network in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS: {_network!r} is not an IP address or network"
        ) from _error
