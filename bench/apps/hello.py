"""Hello world: the smallest WSGI app, to measure a server's own overhead.

`/slow` answers the same after sleeping 200 ms: the mixed scenario sends one
request in ten there, to see what a slow request does to the others' latency.
A request body is read to the end first, as a form handler would (the
slow-clients scenario's slow-body attacker relies on that).
"""

import time

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
SLOW_PATH = "/slow"
SLOW_SECONDS = 0.2


def app(environ, start_response):
    if environ.get("CONTENT_LENGTH", "") not in ("", "0"):
        environ["wsgi.input"].read()
    if environ.get("PATH_INFO") == SLOW_PATH:
        time.sleep(SLOW_SECONDS)
    start_response("200 OK", list(HEADERS))
    return [BODY]


application = app
