from django.urls import path
from django.views.generic import RedirectView

from sessions_app import views, views_people, views_replay

app_name = "sessions"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="sessions:list", permanent=False), name="home"),
    path("sessions/", views.session_list, name="list"),
    path("sessions/new/", views.session_new, name="create"),
    path("sessions/<uuid:session_id>/", views.session_room, name="room"),
    path("sessions/<uuid:session_id>/replay/", views_replay.session_replay, name="replay"),
    path("sessions/<uuid:session_id>/events/", views_replay.session_events, name="events"),
    path("sessions/<uuid:session_id>/fork/", views_replay.session_fork_view, name="fork"),
    path("sessions/<uuid:session_id>/compare/", views_replay.session_compare, name="compare"),
    path("sessions/<uuid:session_id>/people/search/", views_people.people_search, name="people_search"),
    path("sessions/<uuid:session_id>/people/", views_people.member_change, name="members"),
    path("sessions/<uuid:session_id>/links/", views_people.links, name="links"),
    path("sessions/<uuid:session_id>/links/<int:link_id>/revoke/", views_people.link_revoke,
         name="link_revoke"),
    path("join/<str:token>/", views_people.join, name="join"),
]
