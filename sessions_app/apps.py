from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Meeting sessions"

    def ready(self) -> None:
        """Plug this app into the layers below it: realtime asks it about rooms, the runner
        stores through it, and every session keeps its event log. (Imported here, not at the
        top: Django imports apps.py before any model exists.)"""
        from django.core import checks

        from realtime.rooms import register_backend
        from sessions_app import signals
        from sessions_app.checks import check_prices
        from sessions_app.rooms import SessionRooms
        from sessions_app.run_store import SessionRunStore
        from workflows.store import register_store

        register_backend(SessionRooms())
        register_store(SessionRunStore())
        signals.connect()
        checks.register(check_prices)
