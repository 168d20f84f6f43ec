from django.urls import path

from . import views

app_name = "guestbook"

urlpatterns = [
    path("", views.entry_list, name="list"),
    path("sign/", views.sign, name="sign"),
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
]
