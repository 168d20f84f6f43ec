"""The servers compared (SERVERS): how each one is started for a scenario.

Every server gets the same worker count and binds HOST. Adding a server is
adding an entry. Starting, waiting and stopping are process.py's job.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.paths import HARNESS_DIR, HOST, STATIC_DIR, VENV_BIN, venv
from harness.scenarios import Scenario


@dataclass(frozen=True)
class Server:
    name: str
    # (scenario, workers, port) -> argv; the server runs with cwd=scenario.cwd
    command: Callable[[Scenario, int, int], list[str]]
    version: list[str]  # argv that prints the version
    kinds: tuple[str, ...] = ("app",)  # the scenario kinds it can serve


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def whitenoise(sc: Scenario) -> list[str]:
    """The prefix that makes a Django scenario's app serve /static/ itself."""
    return ["env", "DJANGO_SETTINGS_MODULE=mysite.settings_whitenoise"] if sc.django else []


def tandem(sc: Scenario, workers: int, port: int) -> list[str]:
    argv = [venv("tandem"), sc.app, "-w", str(workers), "-b", f"{HOST}:{port}"]
    if sc.kind == "static":
        argv += ["--static", f"/static/={STATIC_DIR}"]
    elif sc.django:
        argv += ["--static", "/static/=staticfiles"]
    return argv


def nginx_command(conf_dir: Path, workers: int, http: str) -> list[str]:
    """Writes conf_dir/nginx.conf for a foreground nginx with `workers` worker
    processes, no access log and its temp files under conf_dir, whose http
    block also holds `http` (server blocks and settings); returns the command."""
    temp = "".join(
        f"    {kind}_temp_path {conf_dir}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (conf_dir / "nginx.conf").write_text(
        f"""daemon off;
master_process on;
worker_processes {workers};
pid {conf_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}{http}}}
"""
    )
    return [NGINX, "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")]


def nginx(sc: Scenario, workers: int, port: int) -> list[str]:
    # nginx alone serving the same directory: `workers` worker processes, sendfile on.
    conf_dir = Path(tempfile.mkdtemp(prefix="tandem-bench-nginx-"))
    atexit.register(shutil.rmtree, conf_dir, True)  # after the run, when nginx is long gone
    http = f"""    include /etc/nginx/mime.types;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen {HOST}:{port};
        location /static/ {{ alias {STATIC_DIR}/; }}
    }}
"""
    return nginx_command(conf_dir, workers, http)


def gunicorn(sc: Scenario, workers: int, port: int) -> list[str]:
    # sync workers, gunicorn's default
    return whitenoise(sc) + [venv("gunicorn"), "-w", str(workers), "-b", f"{HOST}:{port}", sc.app]


def nginx_gunicorn(sc: Scenario, workers: int, port: int) -> list[str]:
    argv = ["bash", str(HARNESS_DIR / "nginx_gunicorn.sh"), HOST, str(port), str(workers), sc.app]
    return argv + (["staticfiles"] if sc.django else [])


def granian(sc: Scenario, workers: int, port: int) -> list[str]:
    argv = [venv("granian"), "--interface", "wsgi", "--workers", str(workers)]
    if sc.kind == "static":
        # granian's own static file serving (from its Rust side, no Python)
        argv += ["--static-path-route", "/static", "--static-path-mount", str(STATIC_DIR)]
    return whitenoise(sc) + argv + ["--host", HOST, "--port", str(port), sc.app]


def uwsgi(sc: Scenario, workers: int, port: int) -> list[str]:
    # uWSGI's HTTP router (one process) in front of `workers` worker processes,
    # with HTTP/1.1 keep-alive (off by default) so wrk's connections are reused.
    argv = [venv("uwsgi"), "--http", f"{HOST}:{port}", "--processes", str(workers)]
    argv += ["--master", "--module", sc.app, "--need-app", "--die-on-term"]
    argv += ["--http-keepalive", "--disable-logging", "--ignore-sigpipe", "--ignore-write-errors"]
    argv += ["--disable-write-exception"]
    return whitenoise(sc) + argv


SERVERS: dict[str, Server] = {
    s.name: s
    for s in [
        Server("tandem", tandem, [venv("tandem"), "--version"], kinds=("app", "static")),
        Server("gunicorn", gunicorn, [venv("gunicorn"), "--version"]),
        Server("nginx+gunicorn", nginx_gunicorn, [NGINX, "-v"]),
        Server("granian", granian, [venv("granian"), "--version"], kinds=("app", "static")),
        Server("uwsgi", uwsgi, [venv("uwsgi"), "--version"]),
        Server("nginx", nginx, [NGINX, "-v"], kinds=("static",)),
    ]
}


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Variables the servers read that would change what is being compared.
    for key in list(env):
        if key in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS") or key.startswith(
            ("GRANIAN_", "UWSGI_")
        ):
            del env[key]
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
