"""Worker lifecycle: recycling, threads, reloads, scaling, crashes under load."""

import http.client
import os
import signal
import textwrap
import threading
import time

from conftest import wait_until

VERSIONED = textwrap.dedent(
    """
    import os

    VERSION = {version!r}


    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            import time

            time.sleep(1.5)
        body = f"{{VERSION}} {{os.getpid()}}".encode()
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]
    """
)


def write_app(directory, version, broken=False):
    source = VERSIONED.format(version=version)
    if broken:
        source += "\ndef broken(:\n"
    path = directory / "versioned.py"
    path.write_text(source)
    # Make sure the change is visible to mtime polling even within one second.
    stamp = time.time() + (2 if version != "v1" else 0)
    os.utime(path, (stamp, stamp))


class Load:
    """A bounded client loop in threads: keep-alive connections sending GETs
    until stopped (or `limit` seconds pass), recording every outcome."""

    def __init__(self, t, path="/", threads=4, limit=60.0):
        self.t, self.path, self.limit = t, path, limit
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.bodies = set()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for th in self.threads:
            th.join(30)

    def _run(self):
        host, port = self.t.address
        deadline = time.monotonic() + self.limit
        conn = None
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.bodies.add(body.split()[0] if body else b"")
                    else:
                        self.failures.append((resp.status, body[:80]))
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                with self.lock:
                    self.failures.append(("error", repr(err)))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wait_for(self, count, timeout=20):
        wait_until(lambda: self.ok >= count, timeout, message=f"{count} successful requests")


def test_max_requests_recycles_workers_with_no_failed_request(tandem_factory):
    t = tandem_factory(
        "wsgi_app:app", "--max-requests", "5", "--max-requests-jitter", "3", workers=2
    )
    pids = set()
    for _ in range(40):
        r = t.get("/pid")
        assert r.status == 200
        pids.add(int(r.body))
    # 40 requests, at most 8 each: at least 5 different workers served them.
    assert len(pids) >= 5, pids
    t.wait_for_log(r"retiring: served \d+ requests \(--max-requests\)")
    t.wait_for_log(r"worker \d+ retired; starting a replacement")
    t.wait_workers(2)


def test_max_requests_under_concurrent_load_fails_nothing(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--max-requests", "20", workers=2)
    with Load(t, "/hello", threads=4) as load:
        load.wait_for(400, timeout=60)
    assert load.failures == []
    assert "retired" in t.log


def test_max_worker_memory_retires_a_leaking_worker(tandem_factory):
    t = tandem_factory("wsgi_app:app", "--max-worker-memory", "100", workers=1)
    (first,) = t.wait_workers(1)
    served_by = set()
    for _ in range(24):  # 10 MB each; checked every 8 requests
        r = t.get("/leak?mb=10")
        assert r.status == 200
        served_by.add(int(r.body.split()[1]))
    t.wait_for_log(r"retiring: resident memory \d+ MB is over --max-worker-memory 100 MB")
    assert len(served_by) >= 2, "the leaking worker was never replaced"
    (now,) = t.wait_workers(1, exclude=[first])
    assert t.get("/pid").status == 200


def test_threads_serve_requests_concurrently_in_one_worker(tandem_factory, tmp_path):
    t = tandem_factory("wsgi_app:app", "--threads", "4", workers=1)
    results = []

    def call():
        r = t.get(f"/rendezvous?n=4&dir={tmp_path}")
        results.append(r.json())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(results) == 4
    assert all(r["met"] for r in results), results
    assert len({r["pid"] for r in results}) == 1
    assert all(r["multithread"] is True for r in results)


def test_one_thread_per_worker_serializes(tandem_factory, tmp_path):
    # Without --threads, two requests can never be inside one worker at once.
    t = tandem_factory("wsgi_app:app", workers=1, env={})
    results = []

    def call():
        results.append(t.get(f"/rendezvous?n=2&dir={tmp_path}", timeout=30).json())

    threads = [threading.Thread(target=call) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert [r["met"] for r in results].count(False) >= 1
    assert all(r["multithread"] is False for r in results)


def test_hup_reloads_new_code_and_retires_old_workers(tandem_factory, tmp_path):
    write_app(tmp_path, "v1")
    t = tandem_factory("versioned:app", cwd=tmp_path, workers=2)
    old = t.wait_workers(2)
    assert t.get("/").body.startswith(b"v1 ")
    write_app(tmp_path, "v2")
    t.signal(signal.SIGHUP)
    t.wait_for_log(r"reload complete: generation 2 serving", timeout=20)
    r = t.get("/")
    assert r.body.startswith(b"v2 "), r.body
    assert int(r.body.split()[1]) not in old
    t.wait_workers(2, exclude=old)


def test_ten_reloads_under_load_fail_no_request(tandem_factory, tmp_path):
    write_app(tmp_path, "v1")
    t = tandem_factory("versioned:app", cwd=tmp_path, workers=2)
    with Load(t, "/", threads=4) as load:
        load.wait_for(50)
        for _ in range(10):
            mark = t.mark()
            t.signal(signal.SIGHUP)
            t.wait_for_log(r"reload complete", timeout=30, since=mark)
            before = load.ok
            load.wait_for(before + 20)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 200
    t.wait_for_log(r"generation 11 serving")


def test_reload_to_broken_code_keeps_the_old_workers_serving(tandem_factory, tmp_path):
    write_app(tmp_path, "v1")
    t = tandem_factory("versioned:app", cwd=tmp_path, workers=2)
    old = t.wait_workers(2)
    write_app(tmp_path, "v2", broken=True)
    with Load(t, "/", threads=2) as load:
        load.wait_for(20)
        mark = t.mark()
        t.signal(signal.SIGHUP)
        t.wait_for_log(
            r"reload failed: the new code of 'versioned:app' failed to import",
            timeout=20,
            since=mark,
        )
        before = load.ok
        load.wait_for(before + 20)
    assert load.failures == []
    assert load.bodies == {b"v1"}
    assert "SyntaxError" in t.log_since(mark)
    # The same workers still serve, and the site is still up.
    assert t.wait_workers(2) == old
    assert t.get("/").body.startswith(b"v1 ")
    # Fixing the code and reloading again works.
    write_app(tmp_path, "v3")
    t.signal(signal.SIGHUP)
    t.wait_for_log(r"reload complete", timeout=20, since=mark)
    assert t.get("/").body.startswith(b"v3 ")


def test_reload_lets_slow_requests_of_the_old_generation_finish(tandem_factory, tmp_path):
    write_app(tmp_path, "v1")
    t = tandem_factory("versioned:app", cwd=tmp_path, workers=2)
    results = []
    th = threading.Thread(target=lambda: results.append(t.get("/slow")))
    th.start()
    time.sleep(0.3)  # let the slow request reach a worker
    write_app(tmp_path, "v2")
    t.signal(signal.SIGHUP)
    t.wait_for_log(r"reload complete", timeout=20)
    th.join(30)
    assert results[0].status == 200
    assert results[0].body.startswith(b"v1 ")


def test_ttin_and_ttou_change_the_worker_count(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=2)
    start = t.wait_workers(2)
    t.signal(signal.SIGTTIN)
    three = t.wait_workers(3)
    assert start < three
    t.signal(signal.SIGTTOU)
    t.wait_for_log(r"TTOU: going to 2 workers")
    t.wait_workers(2)
    # Two signals of one kind sent back to back may reach the process as one
    # (the kernel doesn't queue standard signals): wait for the first to act.
    t.signal(signal.SIGTTOU)
    t.wait_for_log(r"TTOU: going to 1 workers")
    t.signal(signal.SIGTTOU)  # never below one
    t.wait_for_log(r"TTOU: keeping the last worker", timeout=10)
    t.wait_workers(1)
    assert t.get("/hello").status == 200


def test_kill_9_of_a_busy_worker_fails_exactly_its_request(tandem_factory, tmp_path):
    t = tandem_factory("wsgi_app:app", workers=3)
    marker = tmp_path / "busy"
    victim_result = []
    th = threading.Thread(target=lambda: victim_result.append(t.get(f"/sleep?s=5&mark={marker}")))
    with Load(t, "/hello", threads=2) as load:
        th.start()
        wait_until(lambda: marker.exists() and marker.read_text(), message="the slow request")
        victim = int(marker.read_text())
        load.wait_for(load.ok + 20)
        os.kill(victim, signal.SIGKILL)
        th.join(30)
        before = load.ok
        load.wait_for(before + 50)
    assert victim_result[0].status == 502
    assert load.failures == []
    t.wait_workers(3, exclude=[victim])
    t.wait_for_log(rf"worker {victim} exited: killed by signal 9")


def test_term_lets_slow_requests_complete(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=2)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(t.get("/sleep?s=1.5"))) for _ in range(2)
    ]
    for th in threads:
        th.start()
    time.sleep(0.4)
    t.signal(signal.SIGTERM)
    for th in threads:
        th.join(30)
    assert [r.status for r in results] == [200, 200]
    assert t.wait_exit() == 0


def test_repeated_crashes_back_off(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1)
    for _ in range(4):
        r = t.get("/exit", timeout=30)
        assert r.status == 502
    t.wait_for_log(r"replacing it in \d+ ms: workers keep dying")
    # It still recovers.
    wait_until(lambda: t.get("/hello", timeout=30).status == 200, timeout=30, message="recovery")


def test_reload_flag_picks_up_a_changed_file(tandem_factory, tmp_path):
    write_app(tmp_path, "v1")
    t = tandem_factory("versioned:app", "--reload", cwd=tmp_path, workers=1)
    assert t.get("/").body.startswith(b"v1 ")
    write_app(tmp_path, "v2")
    t.wait_for_log(r"versioned\.py changed: reloading", timeout=15)
    t.wait_for_log(r"reload complete", timeout=20)
    assert t.get("/").body.startswith(b"v2 ")
