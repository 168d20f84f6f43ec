from django.db import models


class Entry(models.Model):
    """One signature in the guestbook: written by the CSRF form or the admin."""

    name = models.CharField(max_length=80)
    message = models.TextField(max_length=2000)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "entries"

    def __str__(self):
        return f"{self.name}: {self.message[:40]}"


class Attachment(models.Model):
    """An uploaded file, stored under MEDIA_ROOT/uploads/ and served by tandem at /media/."""

    file = models.FileField(upload_to="uploads/")
    description = models.CharField(max_length=200, blank=True)
    uploaded = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-uploaded", "-id"]

    def __str__(self):
        return self.file.name
