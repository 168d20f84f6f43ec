from django.contrib import admin

from .models import Attachment, Entry


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ["name", "message", "created"]
    search_fields = ["name", "message"]


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["file", "description", "uploaded"]
