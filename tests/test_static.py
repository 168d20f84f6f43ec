"""Static files through the front (`--static PREFIX=DIR`), end to end against the real binary."""

import email.utils
import gzip
import os
import re
import time

import pytest
import static_tree
from conftest import run_tandem, serving
from static_tree import BIG_SIZE, CSS, SECRET


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return static_tree.build(tmp_path_factory.mktemp("static") / "base")


@pytest.fixture(scope="module")
def srv(tree):
    """Index file on, max-age 120; everything else default."""
    with serving(
        "wsgi_app:app",
        *tree.static_args("--static-index", "index.html", "--static-max-age", "120"),
        workers=1,
    ) as t:
        yield t


def raw_get(t, target, headers=b"", method=b"GET"):
    req = method + b" " + target + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"
    return t.exchange(req, methods=(method.decode(),))[0]


# -- the basics ---------------------------------------------------------------------


def test_get_serves_the_file_with_validators_and_cache_headers(srv, tree):
    r = srv.get("/static/app.css")
    assert r.status == 200
    assert r.body == CSS
    h = r.headers
    assert h["Content-Type"] == "text/css; charset=utf-8"
    assert h["Content-Length"] == str(len(CSS))
    assert re.fullmatch(r'"[0-9a-f]+\.[0-9a-f]+-[0-9a-f]+"', h["ETag"]), h["ETag"]
    mtime = os.stat(tree.root / "app.css").st_mtime
    assert h["Last-Modified"] == email.utils.formatdate(int(mtime), usegmt=True)
    assert h["Cache-Control"] == "public, max-age=120"
    assert h["Accept-Ranges"] == "bytes"
    assert "Vary" not in h and "Content-Encoding" not in h


def test_head_sends_the_headers_of_get_and_no_body(srv):
    get = raw_get(srv, b"/static/big.bin")
    with srv.raw() as c:
        # Two HEADs then a GET on one connection: any stray body bytes would
        # be read as the next status line.
        c.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
        c.send(b"GET /static/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        heads = [c.read_response("HEAD"), c.read_response("HEAD")]
        after = c.read_response()
    for head in heads:
        assert head.status == 200
        assert head.get("Content-Length") == str(BIG_SIZE)
        for name in ("Content-Type", "ETag", "Last-Modified", "Cache-Control"):
            assert head.get(name) == get.get(name), name
    assert after.status == 200 and after.body == b"hello, static\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow(srv, method):
    r = srv.request(
        method, "/static/app.css", body=b"x" if method in ("POST", "PUT", "PATCH") else None
    )
    assert r.status == 405
    assert r.headers["Allow"] == "GET, HEAD"
    assert CSS not in r.body


@pytest.mark.parametrize(
    "name, content_type",
    [
        ("app.css", "text/css; charset=utf-8"),
        ("hello.txt", "text/plain; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("script.js", "text/javascript; charset=utf-8"),
        ("sub/page.html", "text/html; charset=utf-8"),
        ("logo.png", "image/png"),
        ("big.bin", "application/octet-stream"),
        ("blob.zzzunknown", "application/octet-stream"),
    ],
)
def test_content_types(srv, name, content_type):
    r = srv.get(f"/static/{name}")
    assert r.status == 200
    assert r.headers["Content-Type"] == content_type


def test_empty_file(srv):
    r = srv.get("/static/empty.txt")
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == "0"


def test_static_and_app_requests_share_a_connection_in_order(srv):
    data = b"".join(
        b"GET " + p + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        for p in (b"/static/hello.txt", b"/hello", b"/static/big.bin", b"/hello")
    )
    r1, r2, r3, r4 = srv.exchange(data, methods=("GET",) * 4)
    assert r1.body == b"hello, static\n"
    assert r2.body == r4.body == b"Hello, world!\n"
    assert r3.body == static_tree.big_content()


# -- routes ---------------------------------------------------------------------------


def test_longest_prefix_wins(srv):
    r = srv.get("/static/deep/m.txt")
    assert r.status == 200 and r.body == b"from media\n"
    assert srv.get("/static/m.txt").status == 404


def test_paths_outside_every_prefix_go_to_the_app(srv):
    r = srv.get("/hello")
    assert r.body == b"Hello, world!\n"
    r = srv.get("/static")  # no trailing slash: not under /static/
    assert r.status == 404 and b"no route '/static'" in r.body


def test_missing_file_is_the_fronts_404(srv):
    r = srv.get("/static/nope.css")
    assert r.status == 404
    assert b"tandem" in r.body and b"no route" not in r.body


# -- conditional requests -------------------------------------------------------------


def test_if_none_match(srv):
    etag = srv.get("/static/app.css").headers["ETag"]
    for value in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        r = srv.get("/static/app.css", headers={"If-None-Match": value})
        assert r.status == 304, value
        assert r.body == b""
        assert r.headers["ETag"] == etag
        assert r.headers["Cache-Control"] == "public, max-age=120"
    r = srv.get("/static/app.css", headers={"If-None-Match": '"nope"'})
    assert r.status == 200 and r.body == CSS


def test_if_modified_since(srv):
    last_modified = srv.get("/static/app.css").headers["Last-Modified"]
    r = srv.get("/static/app.css", headers={"If-Modified-Since": last_modified})
    assert r.status == 304 and r.body == b""
    r = srv.get("/static/app.css", headers={"If-Modified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"})
    assert r.status == 200 and r.body == CSS
    # If-None-Match takes precedence.
    r = srv.get(
        "/static/app.css", headers={"If-Modified-Since": last_modified, "If-None-Match": '"x"'}
    )
    assert r.status == 200


def test_etag_changes_when_the_file_changes(srv, tree):
    path = tree.root / "changing.txt"
    path.write_bytes(b"one")
    first = srv.get("/static/changing.txt")
    path.write_bytes(b"two!")
    second = srv.get("/static/changing.txt", headers={"If-None-Match": first.headers["ETag"]})
    assert second.status == 200 and second.body == b"two!"
    assert second.headers["ETag"] != first.headers["ETag"]


def test_if_match_and_if_unmodified_since_give_412(srv):
    r = srv.get("/static/app.css", headers={"If-Match": '"other"'})
    assert r.status == 412
    r = srv.get("/static/app.css", headers={"If-Unmodified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"})
    assert r.status == 412
    etag = srv.get("/static/app.css").headers["ETag"]
    assert srv.get("/static/app.css", headers={"If-Match": etag}).status == 200


# -- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app.css", "big.bin"])  # from memory, and streamed from the file
@pytest.mark.parametrize("spec", ["0-0", "10-19", "100-", "-50", "0-999999999"])
def test_single_range(srv, name, spec):
    content = CSS if name == "app.css" else static_tree.big_content()
    n = len(content)
    first, _, last = spec.partition("-")
    if first == "":
        first, last = n - int(last), n - 1
    else:
        first, last = int(first), min(int(last) if last else n - 1, n - 1)
    r = srv.get(f"/static/{name}", headers={"Range": f"bytes={spec}"})
    assert r.status == 206
    assert r.headers["Content-Range"] == f"bytes {first}-{last}/{n}"
    assert r.body == content[first : last + 1]
    assert r.headers["Content-Length"] == str(last - first + 1)


def test_unsatisfiable_range_is_416(srv):
    for spec in (f"{len(CSS)}-", f"{len(CSS) + 10}-{len(CSS) + 20}", "-0"):
        r = srv.get("/static/app.css", headers={"Range": f"bytes={spec}"})
        assert r.status == 416, spec
        assert r.headers["Content-Range"] == f"bytes */{len(CSS)}"
        assert CSS[:50] not in r.body


def test_malformed_range_is_ignored(srv):
    for spec in ("bytes=5-2", "bytes=x-y", "items=0-5", "bytes="):
        r = srv.get("/static/app.css", headers={"Range": spec})
        assert r.status == 200 and r.body == CSS, spec


def parse_multipart(r):
    m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", r.headers["Content-Type"])
    assert m, r.headers["Content-Type"]
    boundary = m.group(1).encode()
    assert r.body.endswith(b"\r\n--" + boundary + b"--\r\n")
    parts = []
    for chunk in r.body.split(b"\r\n--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.strip().split(b"\r\n"))
        parts.append((fields[b"Content-Type"].decode(), fields[b"Content-Range"].decode(), data))
    return parts


@pytest.mark.parametrize("name", ["app.css", "big.bin"])
def test_multiple_ranges_are_multipart(srv, name):
    content = CSS if name == "app.css" else static_tree.big_content()
    n = len(content)
    r = srv.get(f"/static/{name}", headers={"Range": "bytes=0-9, 100-199, -5"})
    assert r.status == 206
    assert r.headers["Content-Length"] == str(len(r.body))
    parts = parse_multipart(r)
    ctype = "text/css; charset=utf-8" if name == "app.css" else "application/octet-stream"
    assert parts == [
        (ctype, f"bytes 0-9/{n}", content[0:10]),
        (ctype, f"bytes 100-199/{n}", content[100:200]),
        (ctype, f"bytes {n - 5}-{n - 1}/{n}", content[n - 5 :]),
    ]


def test_ranges_covering_more_than_the_file_get_the_whole_file(srv):
    r = srv.get("/static/app.css", headers={"Range": "bytes=0-,0-,0-"})
    assert r.status == 200 and r.body == CSS


def test_if_range(srv):
    first = srv.get("/static/app.css")
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    for current in (etag, last_modified):
        r = srv.get("/static/app.css", headers={"Range": "bytes=0-3", "If-Range": current})
        assert r.status == 206 and r.body == CSS[:4], current
    for stale in ('"stale"', f"W/{etag}", "Mon, 01 Jan 1990 00:00:00 GMT"):
        r = srv.get("/static/app.css", headers={"Range": "bytes=0-3", "If-Range": stale})
        assert r.status == 200 and r.body == CSS, stale


# -- encodings and caching --------------------------------------------------------------


@pytest.mark.parametrize(
    "accept, body, coding",
    [
        ("gzip, deflate, br, zstd", b"BROTLI-VARIANT", "br"),
        ("zstd, gzip", b"ZSTD-VARIANT", "zstd"),
        ("gzip", b"GZIP-VARIANT", "gzip"),
        ("br;q=0, gzip", b"GZIP-VARIANT", "gzip"),
        ("identity", CSS, None),
        (None, CSS, None),
    ],
)
def test_precompressed_siblings(srv, accept, body, coding):
    r = srv.get("/static/pre.css", headers={"Accept-Encoding": accept} if accept else {})
    assert r.status == 200
    assert r.body == body
    assert r.headers.get("Content-Encoding") == coding
    assert r.headers["Vary"] == "Accept-Encoding"
    assert r.headers["Content-Type"] == "text/css; charset=utf-8"


def test_each_representation_has_its_own_etag(srv):
    etags = {
        srv.get("/static/pre.css", headers={"Accept-Encoding": a}).headers["ETag"]
        for a in ("br", "gzip", "")
    }
    assert len(etags) == 3
    br = srv.get("/static/pre.css", headers={"Accept-Encoding": "br"}).headers["ETag"]
    r = srv.get("/static/pre.css", headers={"Accept-Encoding": "br", "If-None-Match": br})
    assert r.status == 304 and r.headers["Vary"] == "Accept-Encoding"
    r = srv.get("/static/pre.css", headers={"Accept-Encoding": "gzip", "If-None-Match": br})
    assert r.status == 200 and r.body == b"GZIP-VARIANT"


def test_only_gz_sibling(srv):
    r = srv.get("/static/onlygz.js", headers={"Accept-Encoding": "br, gzip"})
    assert r.body == b"GZIP-ONLY-VARIANT" and r.headers["Content-Encoding"] == "gzip"
    r = srv.get("/static/onlygz.js", headers={"Accept-Encoding": "br"})
    assert r.headers.get("Content-Encoding") is None and r.body.startswith(b"var x")


def test_sibling_symlinked_out_of_the_root_is_not_served(srv):
    r = srv.get("/static/sneaky.css", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.body == CSS and "Content-Encoding" not in r.headers


def test_hashed_names_are_immutable(srv):
    r = srv.get("/static/app.0123456789ab.css")
    assert r.status == 200
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert srv.get("/static/app.css").headers["Cache-Control"] == "public, max-age=120"


def test_default_max_age(tandem_factory, tree):
    t = tandem_factory("wsgi_app:app", *tree.static_args(), workers=1)
    assert t.get("/static/app.css").headers["Cache-Control"] == "public, max-age=60"


def test_on_the_fly_gzip(tandem_factory, tree):
    t = tandem_factory("wsgi_app:app", *tree.static_args("--static-compress"), workers=1)
    r = t.get("/static/app.css", headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(r.body) == CSS and len(r.body) < len(CSS) // 2
    again = t.get("/static/app.css", headers={"Accept-Encoding": "gzip"})  # from the cache
    assert again.body == r.body and again.headers["ETag"] == r.headers["ETag"]
    plain = t.get("/static/app.css")
    assert (
        plain.body == CSS
        and "Content-Encoding" not in plain.headers
        and plain.headers["Vary"] == "Accept-Encoding"
    )
    assert plain.headers["ETag"] != r.headers["ETag"]
    part = t.get("/static/app.css", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
    assert part.status == 206 and part.body == r.body[:10]
    # A precompressed sibling wins; small files and non-text types are left alone.
    assert t.get("/static/pre.css", headers={"Accept-Encoding": "gzip"}).body == b"GZIP-VARIANT"
    tiny = t.get("/static/tiny.css", headers={"Accept-Encoding": "gzip"})
    assert tiny.body == b"a{}\n" and "Content-Encoding" not in tiny.headers
    png = t.get("/static/logo.png", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in png.headers


def test_the_file_cache_never_serves_a_stale_or_escaped_file(tandem_factory, tmp_path, tree):
    """Files settle for 2 s before the cache keeps them; after that every use is
    checked against the file system, so each change below shows at once."""
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.css").write_bytes(b"AAAA")
    (root / "b.css").write_bytes(b"bbbb")
    t = tandem_factory("wsgi_app:app", "--static", f"/f/={root}", workers=1)
    time.sleep(3.2)  # past the settle time: from here on the cache holds them
    gz = {"Accept-Encoding": "gzip"}
    for _ in range(3):
        r = t.get("/f/a.css", headers=gz)
        assert r.body == b"AAAA" and "Vary" not in r.headers, r
        assert t.get("/f/missing.css").status == 404

    (root / "a.css").write_bytes(b"BBBB")  # same size, new content
    assert t.get("/f/a.css").body == b"BBBB"
    (root / "a.css.gz").write_bytes(b"GZ-SIBLING")  # a sibling appears
    r = t.get("/f/a.css", headers=gz)
    assert r.body == b"GZ-SIBLING" and r.headers["Content-Encoding"] == "gzip"
    (root / "missing.css").write_bytes(b"here now")
    assert t.get("/f/missing.css").body == b"here now"

    assert t.get("/f/b.css").body == b"bbbb"
    (root / "b.css").unlink()
    assert t.get("/f/b.css").status == 404
    os.symlink(tree.base / "secret.txt", root / "b.css")  # a cached name now leads out
    r = t.get("/f/b.css")
    assert r.status == 404 and SECRET not in r.body


def test_the_file_cache_can_be_turned_off(tandem_factory, tree):
    t = tandem_factory("wsgi_app:app", *tree.static_args("--static-cache", "0"), workers=1)
    assert t.get("/static/app.css").body == CSS
    assert t.get("/static/pre.css", headers={"Accept-Encoding": "br"}).body == b"BROTLI-VARIANT"


def test_no_on_the_fly_gzip_by_default(srv):
    r = srv.get("/static/app.css", headers={"Accept-Encoding": "gzip"})
    assert r.body == CSS and "Content-Encoding" not in r.headers


# -- directories ---------------------------------------------------------------------------


def test_index_file_and_slash_redirect(srv):
    r = srv.get("/static/sub/")
    assert r.status == 200 and r.body == b"<h1>sub index</h1>\n"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    r = srv.get("/static/sub?x=1")
    assert r.status == 301 and r.headers["Location"] == "/static/sub/?x=1"


def test_no_listing_for_a_directory_without_index(srv):
    r = srv.get("/static/nodir/")
    assert r.status == 404 and b"listed-name" not in r.body


def test_without_index_option_directories_are_404(tandem_factory, tree):
    t = tandem_factory("wsgi_app:app", *tree.static_args(), workers=1)
    for path in ("/static/sub/", "/static/sub", "/static/"):
        r = t.get(path)
        assert r.status == 404 and b"sub index" not in r.body, path


def test_autoindex_lists_what_would_be_served(tandem_factory, tree):
    t = tandem_factory("wsgi_app:app", *tree.static_args("--static-autoindex"), workers=1)
    r = t.get("/static/")
    assert r.status == 200, r
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = r.body.decode()
    assert "<title>Index of /static/</title>" in page
    links = re.findall(r'<a href="([^"]+)">', page)
    for name in ("app.css", "big.bin", "sub/", "nodir/", "link-in.css"):
        assert name in links, (name, links)
    # Dotfiles, symlinks out of the root, FIFOs: not served, so not listed.
    for hidden in (".env", ".git/", "link-out.txt", "link-out-dir/", "fifo.txt"):
        assert hidden not in links, (hidden, links)
    assert "../" not in links, "no way up from the route's root"
    assert links.index("sub/") < links.index("app.css"), "directories first"
    assert SECRET not in r.body
    size = re.search(r'<a href="big.bin">big.bin</a>.* (\d+)\n', page)
    assert size and int(size.group(1)) == BIG_SIZE, page

    r = t.get("/static/nodir/")
    assert r.status == 200 and b'<a href="listed-name.txt">listed-name.txt</a>' in r.body
    assert b'<a href="../">../</a>' in r.body
    r = t.get("/static/nodir?q=1")
    assert r.status == 301 and r.headers["Location"] == "/static/nodir/?q=1"
    head = t.request("HEAD", "/static/nodir/")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == len(t.get("/static/nodir/").body)


def test_autoindex_prefers_the_index_file(tandem_factory, tree):
    t = tandem_factory(
        "wsgi_app:app",
        *tree.static_args("--static-autoindex", "--static-index", "index.html"),
        workers=1,
    )
    assert t.get("/static/sub/").body == b"<h1>sub index</h1>\n"
    assert b"listed-name.txt" in t.get("/static/nodir/").body


def test_autoindex_shows_dotfiles_and_outside_links_only_when_allowed(tandem_factory, tree):
    t = tandem_factory(
        "wsgi_app:app",
        *tree.static_args("--static-autoindex", "--static-dotfiles", "--static-follow-symlinks"),
        workers=1,
    )
    links = re.findall(r'<a href="([^"]+)">', t.get("/static/").body.decode())
    for name in (".env", ".git/", "link-out.txt", "link-out-dir/"):
        assert name in links, (name, links)


def test_autoindex_escapes_names(tandem_factory, tmp_path):
    (tmp_path / 'a <b> & "c".txt').write_bytes(b"x")
    (tmp_path / "caf\u00e9.txt").write_bytes(b"x")
    t = tandem_factory(
        "wsgi_app:app", "--static", f"/f/={tmp_path}", "--static-autoindex", workers=1
    )
    page = t.get("/f/").body.decode()
    assert (
        '<a href="a%20%3Cb%3E%20%26%20%22c%22.txt">a &lt;b&gt; &amp; &quot;c&quot;.txt</a>' in page
    ), page
    assert '<a href="caf%C3%A9.txt">caf\u00e9.txt</a>' in page, page
    assert t.get("/f/caf%C3%A9.txt").body == b"x"


def test_file_with_trailing_slash_is_404(srv):
    assert srv.get("/static/app.css/").status == 404


# -- options -------------------------------------------------------------------------------


def test_dotfiles_hidden_by_default_and_served_on_request(srv, tandem_factory, tree):
    for path in ("/static/.env", "/static/.git/config"):
        r = srv.get(path)
        assert r.status == 404 and SECRET not in r.body
    t = tandem_factory("wsgi_app:app", *tree.static_args("--static-dotfiles"), workers=1)
    assert t.get("/static/.env").body == SECRET + b"-dotenv"


def test_symlinks(srv, tandem_factory, tree):
    assert srv.get("/static/link-in.css").body == CSS
    for path in ("/static/link-out.txt", "/static/link-out-dir/secret2.txt"):
        r = srv.get(path)
        assert r.status == 404 and SECRET not in r.body
    t = tandem_factory("wsgi_app:app", *tree.static_args("--static-follow-symlinks"), workers=1)
    assert t.get("/static/link-out.txt").body == SECRET
    assert t.get("/static/link-out-dir/secret2.txt").body == SECRET + b"-2"


def test_fifo_is_not_served_and_does_not_hang(srv):
    start = time.monotonic()
    assert srv.get("/static/fifo.txt", timeout=5).status == 404
    assert time.monotonic() - start < 3


def test_fallthrough_to_the_app(tandem_factory, tree):
    t = tandem_factory(
        "wsgi_app:app", "--static", f"/={tree.root}", "--static-fallthrough", workers=1
    )
    assert t.get("/app.css").body == CSS
    assert t.get("/hello").body == b"Hello, world!\n"  # no such file: the app
    r = t.post("/echo", b"payload")  # not GET/HEAD: the app
    assert r.status == 200 and r.json()["body"] == "payload"
    assert t.get("/.env").status == 404  # refused, not passed on
    r = t.get("/missing.css")
    assert r.status == 404 and b"no route '/missing.css'" in r.body


# -- memory ---------------------------------------------------------------------------------


def test_huge_file_streams_with_bounded_memory(tandem_factory, tree):
    huge = tree.base / "huge"
    huge.mkdir(exist_ok=True)
    size = 512 * 1024 * 1024
    with open(huge / "huge.bin", "wb") as f:
        f.truncate(size)  # sparse: cheap to create, real bytes to send
    t = tandem_factory("wsgi_app:app", "--static", f"/h/={huge}", workers=1)
    t.get("/hello")
    before = t.rss_kib()
    with t.raw(timeout=30) as c:
        c.send(b"GET /h/huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        _, status, _, headers = c.read_head()
        assert status == 200 and {k.lower(): v for k, v in headers}["content-length"] == str(size)
        c.f.read(1024 * 1024)
        time.sleep(0.5)  # a slow client: the server must not read ahead
        stalled = t.rss_kib()
        got = 1024 * 1024
        while got < size:
            chunk = c.f.read(min(4 * 1024 * 1024, size - got))
            assert chunk and not chunk.strip(b"\0"), "short or wrong body"
            got += len(chunk)
        done = t.rss_kib()
    assert stalled - before < 32 * 1024, (before, stalled)
    assert done - before < 32 * 1024, (before, done)


# -- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--static", "static"], "expected PREFIX=DIR"),
        (["--static", "static/=."], "must start and end with '/'"),
        (["--static", "/static=."], "must start and end with '/'"),
        (["--static", "/static/=/no/such/dir"], "no such directory"),
        (["--static", "/s/=.", "--static", "/s/=."], "given twice"),
        (["--static", "/s/=.", "--static-index", "a/b"], "--static-index"),
    ],
)
def test_bad_static_flags_exit_2(args, message):
    r = run_tandem([*args, "wsgi_app:app"])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr_lines) == 1, r.stderr


def test_help_documents_the_static_flags():
    out = run_tandem(["--help"]).stdout
    for flag in (
        "--static <PREFIX=DIR>",
        "--static-max-age",
        "--static-index",
        "--static-autoindex",
        "--static-dotfiles",
        "--static-follow-symlinks",
        "--static-fallthrough",
        "--static-compress",
        "--static-compress-min-size",
        "--static-compress-cache",
        "--static-cache",
    ):
        assert flag in out, flag


def test_relative_static_dir_follows_chdir(tandem_factory, tree):
    t = tandem_factory(
        "wsgi_app:app",
        "--chdir",
        str(tree.root.parent),
        "--pythonpath",
        str(static_tree.Path(__file__).parent / "apps"),
        "--static",
        "/s/=static",
        workers=1,
    )
    assert t.get("/s/hello.txt").body == b"hello, static\n"
