"""The app behind the proxy tests: served by tandem app nodes and by gunicorn.

Each response says which node answered (NODE_NAME in the environment), so
tests can see how the front spread the load.
"""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

NODE = os.environ.get("NODE_NAME", "?")


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _send(start_response, status, body, content_type="text/plain", extra=()):
    if isinstance(body, str):
        body = body.encode()
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]
    start_response(status, headers)
    return [body]


def who(environ, start_response):
    body = environ["wsgi.input"].read()
    seen = {
        "node": NODE,
        "pid": os.getpid(),
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ.get("QUERY_STRING", ""),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "content_length": environ.get("CONTENT_LENGTH"),
        "body_len": len(body),
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    return _send(start_response, "200 OK", json.dumps(seen), "application/json", [("X-Node", NODE)])


def sleep(environ, start_response):
    time.sleep(float(_query(environ).get("s", "1")))
    return _send(start_response, "200 OK", f"slept on {NODE}", extra=[("X-Node", NODE)])


def accel(environ, start_response):
    q = _query(environ)
    extra = [("Content-Disposition", "attachment; filename=report.txt")]
    if "to" in q:
        extra.append(("X-Accel-Redirect", q["to"]))
    if "file" in q:
        extra.append(("X-Sendfile", q["file"]))
    return _send(start_response, "200 OK", "the app's own body", "text/html", extra)


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])

    def body():
        for i in range(3):
            yield f"part {i}\n".encode()
            time.sleep(0.3)

    return body()


def health(environ, start_response):
    return _send(start_response, "200 OK", "ok")


ROUTES = {"/who": who, "/sleep": sleep, "/accel": accel, "/stream": stream, "/health": health}


def app(environ, start_response):
    # By last segment, so that /any/prefix/who is /who too.
    handler = ROUTES.get("/" + environ["PATH_INFO"].rsplit("/", 1)[-1], who)
    return handler(environ, start_response)
