"""Imports fine, but has no `missing` attribute (nor `application`)."""


def something_else(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"not the app you asked for"]
