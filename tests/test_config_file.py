"""--config FILE: TOML keys are the long flags, tables give listeners, routes
and upstream pools; errors name the file, line and key; the command line
overrides the file; --check-config and --print-config; running without an app."""

import textwrap
from pathlib import Path

import pytest
import tomllib
from conftest import APPS, run_tandem


def write(tmp_path, text, name="tandem.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def check(path, *extra):
    return run_tandem(["--config", str(path), "--check-config", *extra])


def printed(path, *extra):
    r = run_tandem(["--config", str(path), "--print-config", *extra])
    assert r.returncode == 0, r.stderr
    return tomllib.loads(r.stdout)


def test_a_valid_file_checks_out(tmp_path):
    (tmp_path / "static").mkdir()
    path = write(
        tmp_path,
        """
        app = "wsgi_app:app"
        workers = 3
        max-requests = 1000
        static-compress = true

        [[listen]]
        bind = "127.0.0.1:0"

        [[route]]
        prefix = "/static/"
        static = "static"

        [[route]]
        prefix = "/api/"
        proxy = "apps"

        [upstream.apps]
        servers = ["127.0.0.1:9001 weight=2", "[::1]:9002", "unix:/run/app.sock"]
        balance = "round-robin"
        """,
    )
    r = check(path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


@pytest.mark.parametrize(
    "text, line, words",
    [
        (
            "workers = 2\nworkres = 4\n",
            2,
            ["key 'workres'", "no such setting", "did you mean 'workers'"],
        ),
        ('# comment\n\nworkers = "many"\n', 3, ["key 'workers'", "invalid value 'many'"]),
        ('timeout = 30\nworkers = 0\napp = "wsgi_app:app"\n', 2, ["key 'workers'", "at least 1"]),
        ('bind = ["nope"]\n', 1, ["key 'bind'", "nope"]),
        ("check-config = true\n", 1, ["key 'check-config'", "not a setting"]),
        (
            'workers = 2\n[[route]]\nprefix = "/"\nproxy = "apps"\n',
            2,
            ["prefix '/'", "[upstream.apps]"],
        ),
        ('[[route]]\nprefix = "/"\nstatic = "/no/such/dir/"\n', 1, ["no such directory"]),
        ('[[route]]\nprefix = "/"\nap = "x:y"\n', 3, ["unknown field `ap`"]),
        ('[[route]]\nprefix = "/"\napp = "a"\nstatic = "/tmp"\n', 1, ["exactly one of"]),
        ('[upstream.a]\nservers = ["nohost"]\n', 1, ["[upstream.a]", "server 'nohost'"]),
        (
            '[upstream.a]\nservers = ["127.0.0.1:1"]\nbalance = "random"\n',
            3,
            ["unknown variant `random`"],
        ),
        (
            '[upstream.a]\nservers = ["127.0.0.1:1"]\nkeepalive-timeout = 0\n',
            1,
            ["[upstream.a]", "'keepalive-timeout' must be a positive number of seconds"],
        ),
        ("workers = [\n", 1, [""]),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, text, line, words):
    path = write(tmp_path, text)
    r = check(path, "wsgi_app:app")
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    message = r.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith(f"tandem: error: {path}:{line}: "), message
    for word in words:
        assert word in message, message


def test_missing_file_is_a_usage_error(tmp_path):
    r = check(tmp_path / "nope.toml")
    assert r.returncode == 2
    assert "nope.toml" in r.stderr and "No such file" in r.stderr


def test_command_line_overrides_the_file(tmp_path):
    path = write(
        tmp_path,
        """
        app = "wsgi_app:app"
        workers = 3
        timeout = 10
        bind = ["127.0.0.1:7001", "127.0.0.1:7002"]
        static-max-age = 5
        """,
    )
    c = printed(path)
    assert (c["workers"], c["timeout"], c["static-max-age"]) == (3, 10, 5)
    assert c["bind"] == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert c["app"] == "wsgi_app:app"
    c = printed(path, "-w", "1", "--bind", "127.0.0.1:7100", "other:app")
    assert (c["workers"], c["timeout"]) == (1, 10)
    assert c["bind"] == ["127.0.0.1:7100"]
    assert c["app"] == "other:app"


def test_print_config_round_trips(tmp_path):
    (tmp_path / "files").mkdir()
    path = write(
        tmp_path,
        """
        workers = 2
        [[route]]
        prefix = "/files/"
        static = "files"
        internal = true
        [[route]]
        prefix = "/"
        app = "wsgi_app:app"
        [upstream.spare]
        servers = ["127.0.0.1:9001"]
        health-check = "/health"
        """,
    )
    c = printed(path)
    assert c["workers"] == 2 and c["timeout"] == 30 and c["keepalive-timeout"] == 75
    assert c["route"][0] == {
        "prefix": "/files/",
        "static": str((tmp_path / "files").resolve()),
        "internal": True,
    }
    assert c["route"][1] == {"prefix": "/", "app": "wsgi_app:app"}
    assert c["upstream"]["spare"]["health-check"] == "/health"
    assert c["upstream"]["spare"]["balance"] == "least-outstanding"
    again = tmp_path / "again.toml"
    r = run_tandem(["--config", str(path), "--print-config"])
    again.write_text(r.stdout)
    assert printed(again) == c


def test_every_flag_is_a_key(tmp_path):
    # No per-flag code: any long flag from --help works as a key.
    path = write(
        tmp_path,
        'app = "wsgi_app:app"\nlimit-request-line = 1000\nforwarded-allow-ips = "10.0.0.0/8"\n',
    )
    c = printed(path)
    assert c["limit-request-line"] == 1000 and c["forwarded-allow-ips"] == "10.0.0.0/8"


def test_app_from_a_route_serves(tmp_path, tandem_factory):
    path = write(
        tmp_path,
        """
        workers = 1
        [[listen]]
        bind = "127.0.0.1:0"
        [[route]]
        prefix = "/"
        app = "wsgi_app:app"
        """,
    )
    t = tandem_factory(None, "--config", str(path), binds=(), workers=None, expect_listeners=1)
    assert t.get("/hello").body == b"Hello, world!\n"
    assert len(t.worker_pids()) == 1


def test_without_an_app_there_are_no_workers(tmp_path, tandem_factory):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.txt").write_text("static only")
    path = write(
        tmp_path,
        """
        [[route]]
        prefix = "/site/"
        static = "site"
        """,
    )
    t = tandem_factory(None, "--config", str(path), workers=None, cwd=APPS)
    assert t.get("/site/index.txt").body == b"static only"
    assert t.get("/other").status == 404
    assert t.post("/site/index.txt", b"x").status == 405
    assert t.worker_pids() == set()
    assert "without workers" in t.log


def test_no_app_and_no_routes_is_an_error():
    r = run_tandem(["-w", "2"])
    assert r.returncode == 2
    assert "no APP_MODULE" in r.stderr


def test_the_example_front_config_checks_out(tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "front.toml"
    copy = tmp_path / "front.toml"
    copy.write_text(example.read_text())
    for d in ("django_site/staticfiles", "django_site/media"):
        (tmp_path / d).mkdir(parents=True)
    r = check(copy)
    assert (r.returncode, r.stderr) == (0, "")
    c = printed(copy)
    assert c["upstream"]["apps"]["servers"][1] == "10.0.0.3:8001 weight=2"
    assert [route["prefix"] for route in c["route"]] == ["/static/", "/protected/", "/"]
