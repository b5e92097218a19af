"""URL map: admin, Django's auth views, Prometheus metrics and the session pages."""

from django.contrib import admin
from django.urls import include, path

from realtime.agui import views as agui
from realtime.views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("agui/sessions/<uuid:session_id>/events", agui.watch, name="agui-watch"),
    path("agui/<slug:workflow>/", agui.run_agent, name="agui-run"),
    path("", include("sessions_app.urls")),
]
