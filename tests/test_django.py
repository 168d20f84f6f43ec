"""The example Django site served by the real tandem, over plain HTTP.

What a Django deployment needs from its server: pages rendered from the
database, CSRF-protected forms, uploads that land in MEDIA_ROOT and come
back from /media/, hashed static files from /static/ with long cache
headers, streaming responses that really stream, and Django's own checks
(ALLOWED_HOSTS) seeing the request as sent. The browser's view of the same
site is in test_browser.py.
"""

import http.cookiejar
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from conftest import serving
from django_site import APP, require_static, server_args


@pytest.fixture(scope="module")
def site(django_site):
    with serving(APP, *server_args(), cwd=django_site, workers=2) as t:
        yield t


class Client:
    """A cookie-keeping HTTP client, like a browser without JavaScript."""

    def __init__(self, base_url):
        self.base = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path, data=None, headers=None):
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read(), resp.url
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read(), e.url

    def csrf_token(self, path):
        status, _, body, _ = self.open(path)
        assert status == 200, body[:500]
        m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        assert m, body[:1000]
        return m.group(1).decode()

    def post_form(self, path, fields):
        data = urllib.parse.urlencode(fields).encode()
        return self.open(path, data, {"Content-Type": "application/x-www-form-urlencoded"})

    def post_multipart(self, path, fields, files):
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        for name, (filename, content, ctype) in files.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
                + content
                + b"\r\n"
            )
        parts.append(f"--{boundary}--\r\n".encode())
        return self.open(
            path, b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )


def test_list_page_reads_the_database_through_a_template(site):
    c = Client(site.url)
    name = f"visitor-{uuid.uuid4().hex[:8]}"
    token = c.csrf_token("/sign/")
    status, _, body, url = c.post_form(
        "/sign/", {"csrfmiddlewaretoken": token, "name": name, "message": "hello & <b>"}
    )
    assert status == 200 and url.endswith("/"), (status, url)  # redirected to the list
    assert name.encode() in body
    assert b"hello &amp; &lt;b&gt;" in body  # escaped by the template
    # Another connection, maybe another worker, reads the same row.
    status, _, body, _ = Client(site.url).open("/")
    assert status == 200 and name.encode() in body


def test_form_post_without_csrf_token_is_refused(site):
    c = Client(site.url)
    c.csrf_token("/sign/")  # has the cookie, but sends no token
    status, _, body, _ = c.post_form("/sign/", {"name": "mallory", "message": "no token"})
    assert status == 403, body[:300]
    assert b"mallory" not in Client(site.url).open("/")[2]


def test_unknown_host_is_rejected_by_django(site):
    r = site.get("/", headers={"Host": "evil.example"})
    assert r.status == 400


def test_debug_is_off(site):
    r = site.get("/no-such-page/")
    assert r.status == 404
    assert b"URLconf" not in r.body and b"Traceback" not in r.body


def test_streaming_view_streams(site):
    """Each line reaches the client as the view yields it (X-Accel-Buffering: no)."""
    with site.raw(timeout=15) as conn:
        conn.send(b"GET /stream/?lines=4&delay=0.4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        start = time.monotonic()
        _, status, _, headers = conn.read_head()
        assert status == 200
        assert dict((k.lower(), v) for k, v in headers).get("transfer-encoding") == "chunked"
        first = conn.read_chunk()
        first_at = time.monotonic() - start
        rest = b""
        while chunk := conn.read_chunk():
            rest += chunk
        total = time.monotonic() - start
    assert first.startswith(b"line 1 of 4"), first
    assert rest.count(b"\n") == 3, rest
    assert total >= 1.1, total  # three 0.4 s pauses
    assert first_at < 0.6, f"first line after {first_at:.2f}s of {total:.2f}s: buffered"


def test_admin_login_page_links_hashed_static_files(site):
    r = site.get("/admin/login/")
    assert r.status == 200
    assert re.search(rb'href="/static/admin/css/base\.[0-9a-f]{12}\.css"', r.body), r.body[:800]


def test_hashed_static_file_is_served_with_immutable_cache_headers(site):
    require_static()
    page = site.get("/admin/login/").body
    href = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page).group(1)
    r = site.get(href.decode())
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/css")
    assert "immutable" in r.headers.get("Cache-Control", ""), r.headers
    assert b"--header-bg" in r.body  # the admin's real stylesheet
    assert site.get("/static/admin/css/nope.css").status == 404


def test_upload_lands_in_media_root_and_comes_back_from_media(site, django_site):
    c = Client(site.url)
    token = c.csrf_token("/upload/")
    content = b"uploaded through tandem\n" + bytes(range(256)) * 40
    name = f"report-{uuid.uuid4().hex[:8]}.bin"
    status, _, body, url = c.post_multipart(
        "/upload/",
        {"csrfmiddlewaretoken": token, "description": "a test upload"},
        {"file": (name, content, "application/octet-stream")},
    )
    assert status == 200 and url.endswith("/upload/"), (status, body[:500])
    m = re.search(rb'href="(/media/uploads/report-[^"]+)"', body)
    assert m, body[:1500]
    href = m.group(1).decode()
    stored = django_site / "media" / href[len("/media/") :]
    assert stored.read_bytes() == content  # written by a worker into MEDIA_ROOT
    require_static()
    r = site.get(href)
    assert r.status == 200, r
    assert r.body == content
