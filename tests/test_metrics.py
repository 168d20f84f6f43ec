"""Prometheus metrics on --metrics-bind: scraped over HTTP, parsed with
prometheus_client's own text parser, and checked against known traffic."""

import os
import re
import signal
import time
import urllib.error
import urllib.request

import httpx
import pytest
from conftest import RawConn, Tandem, run_tandem, wait_until
from prometheus_client.parser import text_string_to_metric_families

METRICS_RE = r"metrics on (http://\S+/metrics)"


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def metered(tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("static file\n")
    t = Tandem(
        "wsgi_app:app",
        "--metrics-bind",
        "127.0.0.1:0",
        "--static",
        f"/static/={static}",
        workers=2,
    )
    try:
        t.metrics_url = t.wait_for_log(METRICS_RE).group(1)
        yield t
    finally:
        t.stop()


def test_counts_match_known_traffic(metered):
    t = metered
    for _ in range(5):
        assert t.get("/hello").status == 200
    assert t.get("/no-such-route").status == 404
    for _ in range(3):
        assert t.get("/static/a.txt").status == 200
    for _ in range(2):
        assert t.get("/static/missing.txt").status == 404
    assert t.get("/304").status == 304
    assert t.get("/raise").status == 500

    samples, types = scrape(t.metrics_url)
    assert types["tandem_requests"] == "counter"
    assert types["tandem_request_duration_seconds"] == "histogram"
    assert types["tandem_workers"] == "gauge"
    expected = {
        ("app", "2xx"): 5,
        ("app", "3xx"): 1,
        ("app", "4xx"): 1,
        ("app", "5xx"): 1,
        ("static", "2xx"): 3,
        ("static", "4xx"): 2,
    }
    for route in ("app", "static", "proxy"):
        for code in ("1xx", "2xx", "3xx", "4xx", "5xx"):
            got = value(samples, "tandem_requests_total", route=route, code=code)
            assert got == expected.get((route, code), 0), (route, code)
    assert value(samples, "tandem_request_duration_seconds_count", route="app") == 8
    assert value(samples, "tandem_request_duration_seconds_count", route="static") == 5
    assert value(samples, "tandem_request_duration_seconds_bucket", route="app", le="+Inf") == 8
    # Every queued app request was taken by a worker, and waited at most seconds.
    assert value(samples, "tandem_queue_wait_seconds_count") == 8
    assert value(samples, "tandem_queue_wait_seconds_bucket", le="10.0") == 8
    assert value(samples, "tandem_queue_depth") == 0
    assert value(samples, "tandem_workers", state="idle") == 2
    assert value(samples, "tandem_workers", state="busy") == 0
    assert value(samples, "tandem_connections_total") == 13
    # Each request line alone is at least 15 bytes; each response at least a status line.
    assert value(samples, "tandem_received_bytes_total") >= 13 * 15
    assert value(samples, "tandem_sent_bytes_total") >= 13 * 17
    for reason in ("timeout", "crash", "max-requests", "memory", "reload"):
        assert value(samples, "tandem_worker_restarts_total", reason=reason) == 0


def test_refused_requests_are_counted(metered):
    t = metered
    for bad in (
        b"GET /hello HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ):
        with RawConn(t.address) as c:
            c.send(bad)
            assert c.read_response().status in (400, 431)
    # HTTP/2 (h2c) has its own head check.
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        assert client.get(f"{t.url}/hello", headers={"X-Big": "a" * 9000}).status_code == 431
    assert t.get("/hello").status == 200

    def four_refusals():
        samples, _ = scrape(t.metrics_url)
        refused = value(samples, "tandem_requests_total", route="refused", code="4xx")
        return samples if refused == 4 else None

    # Counted once the refused connection has closed.
    samples = wait_until(four_refusals, timeout=5, message="four refusals counted")
    assert value(samples, "tandem_requests_total", route="app", code="2xx") == 1
    assert value(samples, "tandem_requests_total", route="refused", code="2xx") == 0
    # Refusals are counted, not timed.
    assert ("tandem_request_duration_seconds_count", (("route", "refused"),)) not in samples


def test_open_connections_and_busy_workers(metered, tmp_path):
    t = metered
    mark = tmp_path / "mark"
    conn = t.connection()
    conn.request("GET", f"/sleep?s=3&mark={mark}")
    wait_until(mark.exists, message="the app to start sleeping")
    idle = t.raw()  # a second connection that sends nothing
    try:
        wait_until(
            lambda: value(scrape(t.metrics_url)[0], "tandem_open_connections") == 2,
            message="two open connections",
        )
        wait_until(
            lambda: value(scrape(t.metrics_url)[0], "tandem_workers", state="busy") == 1,
            message="one busy worker in the metrics",
        )
    finally:
        idle.close()
        assert conn.getresponse().status == 200
        conn.close()
    wait_until(
        lambda: value(scrape(t.metrics_url)[0], "tandem_open_connections") == 0,
        message="no open connections",
    )


def test_restarts_by_reason(tmp_path):
    t = Tandem(
        "wsgi_app:app",
        "--metrics-bind",
        "127.0.0.1:0",
        "--max-requests",
        "2",
        "--timeout",
        "1",
        workers=1,
    )
    try:
        url = t.wait_for_log(METRICS_RE).group(1)
        first = t.worker_pids()
        for _ in range(2):
            assert t.get("/hello").status == 200
        t.wait_workers(1, exclude=first)  # retired after --max-requests 2
        mark = t.mark()
        t.signal(signal.SIGHUP)  # one worker replaced by a reload
        t.wait_for_log("reload complete", since=mark, timeout=20)
        assert t.get("/exit").status == 502  # a crash
        assert t.get("/sleep?s=5").status == 504  # a timeout
        want = {"max-requests": 1, "crash": 1, "timeout": 1, "reload": 1, "memory": 0}
        last = {}

        def restarts():
            s, _ = scrape(url)
            last.update({r: value(s, "tandem_worker_restarts_total", reason=r) for r in want})
            return last == want

        wait_until(restarts, timeout=15, message=f"restart counts {want} (last: {last})")
    finally:
        t.stop()


def test_only_metrics_path_is_served(metered):
    base = metered.metrics_url.rpartition("/")[0]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/other", timeout=10)
    assert err.value.code == 404
    req = urllib.request.Request(metered.metrics_url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 405


def test_bad_metrics_bind_is_a_one_line_error():
    r = run_tandem(["--metrics-bind", "unix:/tmp/x", "wsgi_app:app"])
    assert r.returncode == 2
    assert re.search(r"--metrics-bind.*expected HOST:PORT", r.stderr), r.stderr
    assert len(r.stderr_lines) == 1


def test_static_cache_hits(tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("cached\n")
    time.sleep(3.2)  # --static-cache remembers only files that have settled
    t = Tandem("wsgi_app:app", "--metrics-bind", "127.0.0.1:0", "--static", f"/static/={static}")
    try:
        url = t.wait_for_log(METRICS_RE).group(1)

        def cache():
            s, _ = scrape(url)
            hits = value(s, "tandem_static_cache_hits_total")
            return hits, value(s, "tandem_static_cache_misses_total")

        assert t.get("/static/a.txt").status == 200
        hits, misses = cache()
        assert misses >= 1
        for _ in range(3):
            assert t.get("/static/a.txt").body == b"cached\n"
        hits_after, misses_after = cache()
        assert misses_after == misses
        assert hits_after - hits >= 3
    finally:
        t.stop()


def test_static_cache_follows_change_notices_instead_of_stat(tmp_path):
    """On a local file system, cached files are kept fresh by inotify: no
    stat per use, and every change shows at once, including a write through
    a hard link outside the root and a directory swapped on the way."""
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / "a.css").write_bytes(b"AAAA")
    (static / "b.css").write_bytes(b"BBBB")
    time.sleep(3.2)  # --static-cache remembers only files that have settled
    t = Tandem("wsgi_app:app", "--metrics-bind", "127.0.0.1:0", "--static", f"/s/={static}")
    try:
        url = t.wait_for_log(METRICS_RE).group(1)

        def cache():
            s, _ = scrape(url)
            stats = value(s, "tandem_static_cache_stats_total")
            return stats, value(s, "tandem_static_cache_watches")

        assert t.get("/s/css/a.css").body == b"AAAA"  # read and remembered
        assert t.get("/s/b.css").body == b"BBBB"
        stats, watches = cache()
        assert watches >= 4  # the root, css/, and the two files
        for _ in range(20):
            assert t.get("/s/css/a.css").body == b"AAAA"
            assert t.get("/s/b.css", headers={"Accept-Encoding": "br, gzip"}).body == b"BBBB"
        assert cache()[0] == stats, "uses of watched entries need no stat"

        os.link(static / "b.css", tmp_path / "elsewhere.css")
        (tmp_path / "elsewhere.css").write_bytes(b"bbbb")  # in place, through the other name
        assert t.get("/s/b.css").body == b"bbbb"
        (static / "b.css.gz").write_bytes(b"GZ")  # a sibling appears
        r = t.get("/s/b.css", headers={"Accept-Encoding": "gzip"})
        assert r.body == b"GZ" and r.headers["Content-Encoding"] == "gzip"

        (static / "css").rename(static / "css.old")  # the directory swapped for a new one
        (static / "css").mkdir()
        (static / "css" / "a.css").write_bytes(b"NEW!")
        assert t.get("/s/css/a.css").body == b"NEW!"
        (static / "css" / "a.css").unlink()
        assert t.get("/s/css/a.css").status == 404
    finally:
        t.stop()


@pytest.mark.parametrize("flag", [None, "--no-sendfile"])
def test_files_go_with_sendfile_unless_turned_off(tmp_path, flag):
    """Files over the small-file cache's limit are sent with sendfile(2) on
    plain HTTP/1.1 (whole, and as a range), byte for byte; --no-sendfile
    reads them instead."""
    static = tmp_path / "static"
    static.mkdir()
    content = os.urandom(3 * 1024 * 1024 + 17)
    (static / "big.bin").write_bytes(content)
    extra = [flag] if flag else []
    args = ["--metrics-bind", "127.0.0.1:0", "--static", f"/static/={static}", *extra]
    t = Tandem("wsgi_app:app", *args)
    try:
        url = t.wait_for_log(METRICS_RE).group(1)
        before = value(scrape(url)[0], "tandem_sendfile_bytes_total")
        assert t.get("/static/big.bin").body == content
        ranged = t.get("/static/big.bin", headers={"Range": "bytes=1000-400999"})
        assert ranged.status == 206
        assert ranged.body == content[1000:401000]
        sent = value(scrape(url)[0], "tandem_sendfile_bytes_total") - before
        assert sent == (0 if flag else len(content) + 400000)
    finally:
        t.stop()
