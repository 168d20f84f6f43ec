"""The example site's pages: a list read through a template, a form that
writes (CSRF-protected), a file upload into MEDIA_ROOT, and a streaming view."""

import time

from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render

from .forms import AttachmentForm, EntryForm
from .models import Attachment, Entry

MAX_STREAM_LINES = 100
MAX_STREAM_DELAY = 1.0


def entry_list(request):
    entries = Entry.objects.all()[:50]
    return render(request, "guestbook/list.html", {"entries": entries})


def sign(request):
    if request.method == "POST":
        form = EntryForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect("guestbook:list")
    else:
        form = EntryForm()
    return render(request, "guestbook/sign.html", {"form": form})


def upload(request):
    if request.method == "POST":
        form = AttachmentForm(request.POST, request.FILES)
        if form.is_valid():
            form.save()
            return redirect("guestbook:upload")
    else:
        form = AttachmentForm()
    attachments = Attachment.objects.all()[:20]
    return render(request, "guestbook/upload.html", {"form": form, "attachments": attachments})


def _bounded(request, name, default, cast, top):
    try:
        value = cast(request.GET.get(name, default))
    except ValueError:
        value = default
    return max(0, min(value, top))


def stream(request):
    """Sends `lines` lines, `delay` seconds apart, each as soon as it exists.

    tandem buffers a response until it is complete unless the response says
    `X-Accel-Buffering: no` (as with nginx), so a streaming view sets it.
    """
    lines = _bounded(request, "lines", 5, int, MAX_STREAM_LINES)
    delay = _bounded(request, "delay", 0.2, float, MAX_STREAM_DELAY)

    def produce():
        start = time.monotonic()
        for i in range(1, lines + 1):
            if i > 1:
                time.sleep(delay)
            yield f"line {i} of {lines} at {time.monotonic() - start:.3f}s\n"

    response = StreamingHttpResponse(produce(), content_type="text/plain; charset=utf-8")
    response["X-Accel-Buffering"] = "no"
    response["Cache-Control"] = "no-store"
    return response
