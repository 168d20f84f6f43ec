"""Every command shown in docs/ is run here (the convention is in docs/README.md).

Commands are the `$ ` lines of ```sh blocks (a trailing backslash continues
a line), the `ExecStartPre=`/`ExecStart=` lines of ```ini blocks (the
systemd unit) and the `CMD [...]` of ```dockerfile blocks. Each runs in the
session's copy of the example site:

- `tandem ...`: with every `-b/--bind` replaced by `127.0.0.1:0` and
  `--chdir` pointed at the copy; it must print `listening on`, serve the
  site's list page, and serve a hashed static file when it has a `/static/`
  route;
- `python manage.py ...`: with this interpreter; it must exit 0.

Anything else on a `$ ` line fails: the docs show no command nobody ran.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import serving

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def documented_commands():
    """(file:line, command) for every command in docs/*.md."""
    found = []
    for md in sorted(DOCS.glob("*.md")):
        lang = None  # None: outside a fenced block
        pending = None  # a `$ ` command continued with '\'
        for n, line in enumerate(md.read_text().splitlines(), 1):
            m = FENCE.match(line)
            if m:
                lang = None if lang is not None else m.group(2)
                continue
            text = line.strip()
            if pending is not None:
                where, parts = pending
                parts.append(text.rstrip("\\").strip())
                if not text.endswith("\\"):
                    found.append((where, " ".join(parts)))
                    pending = None
                continue
            where = f"{md.name}:{n}"
            if lang == "sh" and text.startswith("$ "):
                command = text[2:]
                if command.endswith("\\"):
                    pending = (where, [command.rstrip("\\").strip()])
                else:
                    found.append((where, command))
            elif lang == "ini" and re.match(r"ExecStart(Pre)?=", text):
                found.append((where, text.split("=", 1)[1]))
            elif lang == "dockerfile" and text.startswith("CMD ["):
                found.append((where, shlex.join(json.loads(text[4:]))))
    return found


COMMANDS = documented_commands()


def test_docs_have_commands():
    programs = {Path(shlex.split(c)[0]).name for _, c in COMMANDS}
    assert len(COMMANDS) >= 8 and "tandem" in programs, COMMANDS


def rewrite_tandem(argv, site):
    """The documented tandem arguments, bound to 127.0.0.1:0 and run in `site`
    (where its pid file and control socket go too)."""
    out = []
    it = iter(argv)
    for arg in it:
        if arg in ("-b", "--bind"):
            next(it)
        elif arg.startswith("--bind=") or (arg.startswith("-b") and len(arg) > 2):
            pass
        elif arg == "--chdir":
            next(it)
            out += ["--chdir", str(site)]
        elif arg.startswith("--chdir="):
            out.append(f"--chdir={site}")
        elif arg in ("--pid", "--control-socket"):
            out += [arg, str(Path(site) / Path(next(it)).name)]
        else:
            out.append(arg)
    return out


@pytest.mark.parametrize("where,command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_runs(where, command, django_site):
    argv = shlex.split(command)
    program = Path(argv[0]).name
    if program == "tandem":
        args = rewrite_tandem(argv[1:], django_site)
        assert not args[0].startswith("-"), f"{where}: put APP_MODULE first: {command}"
        with serving(args[0], *args[1:], workers=None, cwd=django_site) as t:
            page = t.get("/")
            assert page.status == 200 and b"Guestbook" in page.body, (where, page)
            if any(a.startswith("/static/=") for a in args):
                css = re.search(rb'href="(/static/guestbook/site\.[0-9a-f]{12}\.css)"', page.body)
                assert css, page.body[:600]
                r = t.get(css.group(1).decode())
                assert r.status == 200 and "immutable" in r.headers["Cache-Control"], (where, r)
    elif program.startswith("python") and argv[1:2] == ["manage.py"]:
        r = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=django_site,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"{where}: {command}\n{r.stdout}\n{r.stderr}"
    else:
        pytest.fail(f"{where}: no test runs {program!r}: {command}")
