"""A small app wrapped in wsgiref.validate.validator: any PEP 3333 slip raises or warns."""

from wsgiref.validate import validator


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    # The validator only allows read(size), so read in pieces until EOF.
    chunks = []
    while True:
        c = inp.read(8192)
        if not c:
            break
        chunks.append(c)
    body = b"".join(chunks)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/lines":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a\n", b"b\n", b"c\n"])
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"nothing here"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    out = (
        f"{environ['REQUEST_METHOD']} {path} q={environ.get('QUERY_STRING', '')!r}"
        f" len={len(body)}\n"
    ).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


application = validator(_app)
