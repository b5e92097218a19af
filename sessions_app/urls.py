from django.urls import path
from django.views.generic import RedirectView

from sessions_app import views

app_name = "sessions"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="sessions:list", permanent=False), name="home"),
    path("sessions/", views.session_list, name="list"),
    path("sessions/new/", views.session_new, name="create"),
    path("sessions/<uuid:session_id>/", views.session_room, name="room"),
]
