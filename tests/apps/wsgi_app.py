"""The test suite's WSGI app: one route per behaviour under test.

Query arguments pass file paths and timings in; JSON bodies report what the
app saw. Served as `wsgi_app:app` (and `wsgi_app`, which means `application`).
"""

import ctypes
import io
import json
import os
import sys
import time
from urllib.parse import parse_qs

FILE_BYTES = bytes(range(256)) * 1000  # served by /file?kind=bytesio


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _send(start_response, status, body, content_type="text/plain", extra=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra],
    )
    return [body]


def _json(start_response, obj, status="200 OK"):
    return _send(start_response, status, json.dumps(obj), "application/json")


def _read_all(environ):
    return environ["wsgi.input"].read()


def hello(environ, start_response):
    return _send(start_response, "200 OK", b"Hello, world!\n")


def echo(environ, start_response):
    body = _read_all(environ)
    return _json(
        start_response,
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "script_name": environ["SCRIPT_NAME"],
            "query": environ.get("QUERY_STRING"),
            "body": body.decode("latin-1"),
            "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
            "content_type": environ.get("CONTENT_TYPE"),
            "content_length": environ.get("CONTENT_LENGTH"),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "remote_port": environ.get("REMOTE_PORT"),
            "server_name": environ.get("SERVER_NAME"),
            "server_port": environ.get("SERVER_PORT"),
            "protocol": environ.get("SERVER_PROTOCOL"),
            "url_scheme": environ.get("wsgi.url_scheme"),
            "input_terminated": environ.get("wsgi.input_terminated"),
            "pid": os.getpid(),
        },
    )


def environ_dump(environ, start_response):
    out = {}
    for key, value in environ.items():
        if isinstance(value, (str, bool, int, float)) or value is None:
            shown = value
        elif isinstance(value, tuple):
            shown = list(value)
        else:
            shown = repr(value)
        out[key] = [type(value).__name__, shown]
    out["__environ_type__"] = [type(environ).__name__, None]
    inp, err = environ["wsgi.input"], environ["wsgi.errors"]
    out["__input_methods__"] = [
        m for m in ("read", "readline", "readlines", "__iter__") if callable(getattr(inp, m, None))
    ]
    out["__errors_methods__"] = [
        m for m in ("write", "writelines", "flush") if callable(getattr(err, m, None))
    ]
    return _json(start_response, out)


def input_ops(environ, start_response):
    """Exercises the wsgi.input API; the op is chosen by ?op=."""
    inp = environ["wsgi.input"]
    op = _query(environ).get("op", "mix")
    enc = lambda b: b.decode("latin-1")  # noqa: E731
    if op == "mix":
        out = {
            "read3": enc(inp.read(3)),
            "readline": enc(inp.readline()),
            "readline2": enc(inp.readline(2)),
            "readline_rest": enc(inp.readline()),
            "readlines": [enc(x) for x in inp.readlines()],
            "read_eof": enc(inp.read()),
            "read5_eof": enc(inp.read(5)),
            "readline_eof": enc(inp.readline()),
        }
    elif op == "iter":
        out = {"lines": [enc(x) for x in inp]}
    elif op == "readn":
        n = int(_query(environ).get("n", "4"))
        chunks = []
        while True:
            c = inp.read(n)
            if not c:
                break
            assert len(c) <= n, (len(c), n)
            chunks.append(c)
        out = {"sizes": [len(c) for c in chunks], "body": enc(b"".join(chunks))}
    elif op == "lines":
        import hashlib

        h = hashlib.sha256()
        count = 0
        for line in inp:
            h.update(line)
            count += 1
        out = {"count": count, "sha256": h.hexdigest()}
    elif op == "readlines-hint":
        out = {"lines": [enc(x) for x in inp.readlines(5)], "rest": enc(inp.read())}
    else:
        raise ValueError(op)
    return _json(start_response, out)


def upload_echo(environ, start_response):
    """Streams wsgi.input back, 64 KiB at a time."""
    inp = environ["wsgi.input"]
    headers = [("Content-Type", "application/octet-stream")]
    if environ.get("CONTENT_LENGTH"):
        headers.append(("Content-Length", environ["CONTENT_LENGTH"]))
    start_response("200 OK", headers)

    def chunks():
        while True:
            c = inp.read(65536)
            if not c:
                return
            yield c

    return chunks()


def stream(environ, start_response):
    """Sends one chunk, then waits for the ?gate= file (at most 10 s) before the rest."""
    gate = _query(environ)["gate"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])

    def body():
        yield b"first\n"
        deadline = time.monotonic() + 10
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield b"gate-open\n" if os.path.exists(gate) else b"gate-timeout\n"

    return body()


def file_route(environ, start_response):
    q = _query(environ)
    wrapper = environ["wsgi.file_wrapper"]
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("kind") == "bytesio":
        f = io.BytesIO(FILE_BYTES)
        size = len(FILE_BYTES)
    else:
        f = open(q["path"], "rb")  # the wrapper closes it
        size = os.fstat(f.fileno()).st_size
    offset = int(q.get("seek", "0"))
    f.seek(offset)
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    elif q.get("nocl") is None:
        headers.append(("Content-Length", str(size - offset)))
    start_response("200 OK", headers)
    return wrapper(f, 8192)


def exc_info(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Discarded", "yes")])
    try:
        raise ValueError("handled in the app")
    except ValueError:
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "text/plain"), ("X-Custom-Error", "1")],
            sys.exc_info(),
        )
    return [b"custom error page"]


def exc_info_after_write(environ, start_response):
    """After write(), the headers are sent: start_response(exc_info) must re-raise."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial;")
    try:
        raise KeyError("original")
    except KeyError:
        try:
            start_response("500 Internal Server Error", [], sys.exc_info())
        except KeyError as reraised:
            return [b"reraised:" + str(reraised).encode()]
    return [b"not-reraised"]


def write_route(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"part1,")
    write(b"part2,")
    return [b"part3"]


def raise_route(environ, start_response):
    raise RuntimeError("boom-marker from /raise")


BAD_HEADERS = {
    "crlf": [("X-Bad", "a\r\nInjected: yes")],
    "lf": [("X-Bad", "a\nInjected: yes")],
    "cr": [("X-Bad", "a\rInjected: yes")],
    "name-crlf": [("X-Bad\r\nInjected", "yes")],
    "name-colon": [("X-Bad:Injected", "yes")],
    "name-space": [("X-Bad Injected", "yes")],
}


def bad_header(environ, start_response):
    kind = _query(environ).get("kind", "crlf")
    start_response("200 OK", [("Content-Type", "text/plain"), *BAD_HEADERS[kind]])
    return [b"must not be sent"]


BAD_STATUSES = {
    "words": "abc OK",
    "short": "20 OK",
    "long": "2000 OK",
    "crlf": "200 OK\r\nInjected: yes",
    "empty": "",
}


def bad_status(environ, start_response):
    start_response(BAD_STATUSES[_query(environ).get("kind", "words")], [("Content-Type", "x/y")])
    return [b"must not be sent"]


def exit_route(environ, start_response):
    os._exit(1)


def segv_route(environ, start_response):
    ctypes.string_at(0)
    return _send(start_response, "200 OK", b"survived?!")


def sleep_route(environ, start_response):
    q = _query(environ)
    if "mark" in q:
        with open(q["mark"], "w") as f:
            f.write(str(os.getpid()))
    time.sleep(float(q.get("s", "1")))
    return _send(start_response, "200 OK", f"slept {os.getpid()}")


def cl_more(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"01234", b"56789"]


def status_route(environ, start_response):
    code = _query(environ).get("code", "200")
    return _send(start_response, f"{code} Chosen By The App", b"status\n")


def length_route(environ, start_response):
    # Content-Length fields exactly as given: ?v=5,5 sends two of them.
    values = _query(environ).get("v", "5").split(",")
    status = _query(environ).get("status", "200 OK")
    lengths = [("Content-Length", v) for v in values]
    start_response(status, [("Content-Type", "text/plain"), *lengths])
    return [b"hello"]


def no_cl(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"abc", b"", b"def"]


def no_cl_slow(environ, start_response):
    """No Content-Length, and the body is still coming when the front starts sending."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"a" * (100 * 1024)  # past the worker's 64 KiB write batching
        time.sleep(0.3)
        yield b"def"

    return body()


def no_content(environ, start_response):
    start_response("204 No Content", [])
    return [b"should-not-appear"]


def not_modified(environ, start_response):
    start_response("304 Not Modified", [("ETag", '"x"')])
    return [b"should-not-appear"]


class ClosingBody:
    """An iterable whose close() appends 'closed' to a file; mode=raise fails on first next()."""

    def __init__(self, path, mode):
        self.path = path
        self.mode = mode
        self.items = [b"chunk1,", b"chunk2"]

    def __iter__(self):
        if self.mode == "raise":
            raise RuntimeError("close-marker iteration failed")
        return iter(self.items)

    def close(self):
        with open(self.path, "a") as f:
            f.write("closed\n")


def close_marker(environ, start_response):
    q = _query(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ClosingBody(q["path"], q.get("mode", "ok"))


def big_chunk(i):
    """Chunk i of /big: 1 MiB, different for every i."""
    return (b"%08d" % i) * (128 * 1024)


def big(environ, start_response):
    """?mb= MiB of deterministic data, 1 MiB per chunk, with a Content-Length."""
    mb = int(_query(environ).get("mb", "20"))
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(mb << 20))],
    )
    return (big_chunk(i) for i in range(mb))


def pid(environ, start_response):
    return _send(start_response, "200 OK", str(os.getpid()))


def errors_route(environ, start_response):
    err = environ["wsgi.errors"]
    marker = _query(environ)["marker"]
    err.write(f"{marker}-write\n")
    err.writelines([f"{marker}-lines\n"])
    err.flush()
    return _send(start_response, "200 OK", b"logged")


def env_route(environ, start_response):
    return _json(start_response, {"value": os.environ.get(_query(environ)["name"])})


def cwd_route(environ, start_response):
    return _json(start_response, {"cwd": os.getcwd(), "sys_path": sys.path})


_LEAKED = []


def spin_route(environ, start_response):
    """Burns CPU for ?s= seconds without ever sleeping."""
    end = time.monotonic() + float(_query(environ).get("s", "1"))
    n = 0
    while time.monotonic() < end:
        n += 1
    return _send(start_response, "200 OK", f"spun {os.getpid()}")


def leak_route(environ, start_response):
    """Keeps ?mb= more megabytes alive in this worker for good."""
    _LEAKED.append(bytearray(int(_query(environ).get("mb", "10")) << 20))
    return _send(start_response, "200 OK", f"leaked {os.getpid()}")


def rendezvous_route(environ, start_response):
    """Waits (at most 10 s) until ?n= requests have arrived in ?dir=.

    Answers 'met' only if that many requests were inside the app at once,
    which proves they ran concurrently without timing anything.
    """
    q = _query(environ)
    n, where = int(q["n"]), q["dir"]
    open(os.path.join(where, f"{os.getpid()}-{time.monotonic_ns()}"), "w").close()
    deadline = time.monotonic() + 10
    while len(os.listdir(where)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    met = len(os.listdir(where)) >= n
    body = json.dumps({"met": met, "pid": os.getpid(), "multithread": environ["wsgi.multithread"]})
    return _send(start_response, "200 OK", body, "application/json")


def hints_route(environ, start_response):
    """Sends `n` 103 responses (one Link each), waits `delay` seconds, then
    answers; with `late=1` the hints come after start_response, with
    `bad=1` they carry an invalid header name, with `raise=1` the app
    raises right after sending them, with `bytes=1` they are given as bytes
    (gunicorn takes both)."""
    q = _query(environ)
    send_hints = environ["wsgi.early_hints"]
    links = [f"</static/app{i}.css>; rel=preload; as=style" for i in range(int(q.get("n", "1")))]
    if q.get("bad"):
        send_hints([("Bad Name", "x")])
    if q.get("late"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        send_hints([("Link", links[0])])
        return [b"late"]
    for link in links:
        if q.get("bytes"):
            send_hints([(b"Link", link.encode())])
        else:
            send_hints([("Link", link)])
    if q.get("raise"):
        raise RuntimeError("failed after sending hints")
    time.sleep(float(q.get("delay", "0")))
    return _send(start_response, "200 OK", b"hinted", extra=[("Link", link) for link in links])


ROUTES = {
    "/hints": hints_route,
    "/spin": spin_route,
    "/leak": leak_route,
    "/rendezvous": rendezvous_route,
    "/hello": hello,
    "/head": hello,
    "/environ": environ_dump,
    "/input": input_ops,
    "/upload-echo": upload_echo,
    "/stream": stream,
    "/file": file_route,
    "/exc-info": exc_info,
    "/exc-info-after-write": exc_info_after_write,
    "/write": write_route,
    "/raise": raise_route,
    "/bad-header": bad_header,
    "/bad-status": bad_status,
    "/exit": exit_route,
    "/segv": segv_route,
    "/sleep": sleep_route,
    "/cl-more": cl_more,
    "/no-cl": no_cl,
    "/status": status_route,
    "/length": length_route,
    "/no-cl-slow": no_cl_slow,
    "/204": no_content,
    "/304": not_modified,
    "/close-marker": close_marker,
    "/pid": pid,
    "/big": big,
    "/errors": errors_route,
    "/env": env_route,
    "/cwd": cwd_route,
}


REQUEST_LOG = os.environ.get("TANDEM_TEST_REQUEST_LOG")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if REQUEST_LOG:
        # One line per request that reached the app, so tests can prove that
        # a rejected request never did.
        with open(REQUEST_LOG, "a") as f:
            f.write(f"{environ['REQUEST_METHOD']} {path}\n")
    if path == "/echo" or path.startswith("/echo/"):
        return echo(environ, start_response)
    handler = ROUTES.get(path)
    if handler is None:
        return _send(start_response, "404 Not Found", f"no route {path!r}")
    return handler(environ, start_response)


application = app
