import os

from django.contrib import admin
from django.http import HttpResponse
from django.urls import path


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")


urlpatterns = [path("", pid), path("admin/", admin.site.urls)]
