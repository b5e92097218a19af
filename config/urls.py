"""URL map: admin, Django's auth views, Prometheus metrics and the session pages."""

from django.contrib import admin
from django.urls import include, path

from realtime.views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("", include("sessions_app.urls")),
]
