"""Bad apps and dying workers: 500, 502, 504, 503, and the pool recovering."""

import re
import selectors
import threading
import time

import pytest
from conftest import process_state, serving, wait_for_file, wait_until


@pytest.fixture(scope="module")
def one_worker():
    with serving("wsgi_app:app", workers=1) as t:
        yield t


def test_app_raises_gives_500_and_traceback_and_worker_survives(one_worker):
    t = one_worker
    pid_before = t.get("/pid").body.decode()
    mark = t.mark()
    r = t.get("/raise")
    assert r.status == 500
    assert b"boom-marker" not in r.body
    m = t.wait_for_log(r"\[tandem worker (\d+)\] error handling request GET /raise", since=mark)
    assert m.group(1) == pid_before
    t.wait_for_log(r"^Traceback \(most recent call last\)", since=mark)
    t.wait_for_log(r"RuntimeError: boom-marker from /raise", since=mark)
    t.wait_for_log(r'File ".*wsgi_app\.py", line \d+, in raise_route', since=mark)
    # Same worker, still serving.
    for _ in range(3):
        r = t.get("/pid")
        assert r.status == 200 and r.body.decode() == pid_before
    assert t.worker_pids() == {int(pid_before)}


def test_bad_header_log_names_the_header(one_worker):
    t = one_worker
    mark = t.mark()
    assert t.get("/bad-header?kind=crlf").status == 500
    line = t.wait_for_log(r"X-Bad", since=mark).string
    assert "X-Bad" in line
    assert t.get("/hello").status == 200


def _slow_request(t, marker, seconds, results):
    def run():
        try:
            r = t.get(f"/sleep?s={seconds}&mark={marker}", timeout=30)
            results.append((r.status, r.body.decode()))
        except Exception as e:  # recorded and asserted by the test
            results.append(("error", repr(e)))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.mark.parametrize("route", ["/exit", "/segv"])
def test_worker_dies_mid_request(tandem_factory, tmp_path, route):
    t = tandem_factory("wsgi_app:app", workers=2)
    before = t.wait_workers(2)
    # Keep one worker busy, so the crash lands on the other one.
    marker = tmp_path / "busy"
    results = []
    th = _slow_request(t, marker, 1.5, results)
    wait_for_file(marker)
    busy_pid = int(marker.read_text())
    assert busy_pid in before

    r = t.get(route)
    assert r.status == 502
    assert b"502" in r.body

    th.join(30)
    assert results == [(200, f"slept {busy_pid}")], results

    (dead_pid,) = before - {busy_pid}
    after = t.wait_workers(2, exclude=[dead_pid])
    assert busy_pid in after
    (new_pid,) = after - before
    assert process_state(dead_pid) in (None, "Z")
    # The replacement serves: keep one worker busy again, so the new one must answer.
    marker2 = tmp_path / "busy2"
    results2 = []
    th2 = _slow_request(t, marker2, 1, results2)
    wait_for_file(marker2)
    other = ({busy_pid, new_pid} - {int(marker2.read_text())}).pop()
    r = t.get("/pid")
    assert r.status == 200 and int(r.body) == other
    th2.join(30)
    assert results2 and results2[0][0] == 200
    # Only one respawn for one crash.
    assert t.worker_pids() == after


def test_timeout_gives_504_dumps_the_stack_and_respawns(tandem_factory):
    t = tandem_factory("wsgi_app:app", "-t", "1", workers=1)
    (old_pid,) = t.wait_workers(1)
    mark = t.mark()
    start = time.monotonic()
    r = t.get("/sleep?s=5")
    elapsed = time.monotonic() - start
    assert r.status == 504
    assert b"504" in r.body
    assert elapsed < 4.5, f"504 came after {elapsed:.1f}s; the app sleeps 5s"
    # faulthandler's dump of the hung worker's stack (SIGABRT before SIGKILL).
    t.wait_for_log(r"Fatal Python error|Current thread|Thread 0x", timeout=5, since=mark)
    t.wait_for_log(r'File ".*wsgi_app\.py", line \d+ in sleep_route', timeout=5, since=mark)
    # The next request is served, by a new worker.
    r = t.get("/pid", timeout=20)
    assert r.status == 200
    assert int(r.body) != old_pid
    assert t.wait_workers(1, exclude=[old_pid])


def test_timeout_counts_per_request_not_per_worker_life(tandem_factory):
    t = tandem_factory("wsgi_app:app", "-t", "2", workers=1)
    (pid,) = t.wait_workers(1)
    # Several requests of 0.8s each: every one is under the limit.
    for _ in range(4):
        r = t.get("/sleep?s=0.8")
        assert r.status == 200
    assert t.worker_pids() == {pid}


def test_backlog_overflow_gets_503(tandem_factory, tmp_path):
    t = tandem_factory("wsgi_app:app", "--backlog", "1", workers=1)
    marker = tmp_path / "busy"
    first = []
    th1 = _slow_request(t, marker, 3, first)
    wait_for_file(marker)  # the only worker is busy for 3s now

    # Two more requests, both in the front's hands at once: one may wait, one may not.
    a, b = t.raw(timeout=30), t.raw(timeout=30)
    try:
        a.send(b"GET /echo?i=a HTTP/1.1\r\nHost: h\r\n\r\n")
        b.send(b"GET /echo?i=b HTTP/1.1\r\nHost: h\r\n\r\n")
        sel = selectors.DefaultSelector()
        sel.register(a.sock, selectors.EVENT_READ, a)
        sel.register(b.sock, selectors.EVENT_READ, b)
        events = sel.select(timeout=2.5)
        sel.close()
        # The refused one is answered at once, while the worker is still busy.
        assert len(events) == 1, "expected exactly one immediate answer (the 503)"
        refused = events[0][0].data
        r = refused.read_response()
        assert r.status == 503
        assert b"503" in r.body
        assert not first, "the 503 must come before the worker frees up"
        waiting = b if refused is a else a
        r = waiting.read_response()
        assert r.status == 200
        assert r.json()["query"] in ("i=a", "i=b")
    finally:
        a.close()
        b.close()
    th1.join(30)
    assert first and first[0][0] == 200
    assert t.get("/hello").status == 200


def test_backlog_holds_under_a_burst(tandem_factory, tmp_path):
    # Many requests arriving at once while the only worker is busy: exactly --backlog
    # of them may wait, every other one gets 503 (the limit must hold under races).
    backlog, burst = 2, 12
    t = tandem_factory("wsgi_app:app", "--backlog", str(backlog), workers=1)
    marker = tmp_path / "busy"
    first = []
    th1 = _slow_request(t, marker, 3, first)
    wait_for_file(marker)

    conns = [t.raw(timeout=30) for _ in range(burst)]
    barrier = threading.Barrier(burst)
    statuses = []

    def fire(c, i):
        barrier.wait()
        c.send(f"GET /echo?i={i} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        statuses.append(c.read_response().status)

    threads = [threading.Thread(target=fire, args=(c, i)) for i, c in enumerate(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    for c in conns:
        c.close()
    th1.join(30)
    assert sorted(statuses) == [200] * backlog + [503] * (burst - backlog), statuses
    assert first and first[0][0] == 200


def test_timeout_of_a_spinning_worker_dumps_the_spinning_function(tandem_factory):
    # CPU-bound and never blocking: only the supervisor's clock can stop it.
    t = tandem_factory("wsgi_app:app", "-t", "1", workers=1)
    (old_pid,) = t.wait_workers(1)
    mark = t.mark()
    r = t.get("/spin?s=30", timeout=20)
    assert r.status == 504

    def dumped():
        # The worker writes each traceback line in pieces to the stderr it
        # shares with tandem, whose own log lines can land in between.
        own = r"\d{4}-\d\d-\d\dT[\d:.]+Z +[A-Z]+ [^\n]*\n"
        text = re.sub(own, "", t.log_since(mark) + "\n")
        return re.search(r'File ".*wsgi_app\.py", line \d+ in spin_route', text)

    wait_until(dumped, timeout=10, message="the spinning function named in the dump")
    r = t.get("/pid", timeout=20)
    assert r.status == 200 and int(r.body) != old_pid
