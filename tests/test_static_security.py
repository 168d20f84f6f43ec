"""No request target, however encoded, gets a byte from outside a static root.

Secrets are planted beside and above the root (and behind symlinks that lead
out of it); every attempt is sent as raw bytes over a socket (http.client
would normalise some of them) and must get a 4xx without the secret. The
table runs against a default server and against one that serves dotfiles, so
that `.%2e` is refused as a climb, not merely as a dotfile.
"""

import pytest
import static_tree
from conftest import serving
from static_tree import SECRET

ATTEMPTS = [
    # plain climbing
    b"/static/../secret.txt",
    b"/static/../../secret.txt",
    b"/static/../../../../../../../../etc/passwd",
    b"/static/sub/../../secret.txt",
    b"/static/sub/../../../secret.txt",
    b"/static/./../secret.txt",
    b"/static//../secret.txt",
    b"/static/../static/../secret.txt",
    b"/static/....//secret.txt",
    b"/static/..;/secret.txt",
    # percent-encoded dots and slashes
    b"/static/%2e%2e/secret.txt",
    b"/static/%2E%2E/%2E%2E/secret.txt",
    b"/static/.%2e/secret.txt",
    b"/static/%2e./secret.txt",
    b"/static/..%2fsecret.txt",
    b"/static/..%2F..%2Fsecret.txt",
    b"/static/%2e%2e%2fsecret.txt",
    b"/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/static/sub/%2e%2e/%2e%2e/secret.txt",
    b"/static/%2f..%2f..%2fsecret.txt",
    # double encoding
    b"/static/%252e%252e/secret.txt",
    b"/static/..%252f..%252fsecret.txt",
    b"/static/%25%32%65%25%32%65/secret.txt",
    # backslashes
    b"/static/..\\secret.txt",
    b"/static/..\\..\\secret.txt",
    b"/static/..%5csecret.txt",
    b"/static/..%5c..%5csecret.txt",
    b"/static/%5c..%5c..%5csecret.txt",
    b"/static/%2e%2e%5csecret.txt",
    # NUL bytes
    b"/static/app.css%00",
    b"/static/app.css%00.png",
    b"/static/..%00/secret.txt",
    b"/static/%00../../secret.txt",
    b"/static/../secret.txt%00.css",
    # overlong and odd UTF-8
    b"/static/%c0%ae%c0%ae/secret.txt",
    b"/static/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afsecret.txt",
    b"/static/%e0%80%ae%e0%80%ae/secret.txt",
    b"/static/%c1%9c../secret.txt",
    b"/static/..%c0%afsecret.txt",
    b"/static/..%c0%af..%c0%afsecret.txt",
    b"/static/..%ef%bc%8fsecret.txt",
    b"/static/%u002e%u002e/secret.txt",
    # symlinks leading out, directly and through a directory
    b"/static/link-out.txt",
    b"/static/link-out-dir/secret2.txt",
    b"/static/link-out-dir/",
    b"/static/sub/../link-out.txt",
    # dotfiles
    b"/static/.env",
    b"/static/%2eenv",
    b"/static/.git/config",
    b"/static/%2egit/config",
    b"/static/sub/../.env",
    # absolute-form targets and prefixes that are not quite the prefix
    b"http://127.0.0.1/static/../secret.txt",
    b"http://127.0.0.1/static/%2e%2e/secret.txt",
    b"//static/../secret.txt",
    b"/static%2f..%2fsecret.txt",
    b"/static/..",
    b"/static/%2e%2e",
]

# What the secrets contain, and what a leaked /etc/passwd would.
FORBIDDEN = (SECRET, b"root:x:0:0", b"TOP-SECRET")


@pytest.fixture(scope="module", params=["default", "dotfiles"])
def srv(request, tmp_path_factory):
    tree = static_tree.build(tmp_path_factory.mktemp("sec") / "base")
    extra = ["--static-dotfiles"] if request.param == "dotfiles" else []
    with serving("wsgi_app:app", *tree.static_args(*extra), workers=1) as t:
        t.dotfiles = bool(extra)
        yield t


def send_raw(t, target):
    """Sends one request with exactly these target bytes; returns everything received."""
    with t.raw(timeout=10) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return c.read_until_close()


def test_the_table_is_big_enough():
    assert len(ATTEMPTS) >= 30
    assert len(set(ATTEMPTS)) == len(ATTEMPTS)


def test_control_files_inside_the_root_are_served(srv):
    # Without this, a server that refused everything would pass the table.
    data = send_raw(srv, b"/static/hello.txt")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello, static\n")
    data = send_raw(srv, b"/static/sub/../hello.txt")
    assert not any(s in data for s in FORBIDDEN)


@pytest.mark.parametrize("target", ATTEMPTS, ids=lambda t: t.decode("latin-1"))
def test_no_way_out_of_the_root(srv, target):
    data = send_raw(srv, target)
    status = data.split(b"\r\n", 1)[0]
    dotfile_inside_root = target in (
        b"/static/.env",
        b"/static/.git/config",
        b"/static/%2eenv",
        b"/static/%2egit/config",
    )
    if srv.dotfiles and dotfile_inside_root:
        # Served on purpose with --static-dotfiles: the file is inside the
        # root (its content is one of the markers refused by default).
        assert status.startswith(b"HTTP/1.1 200 "), (target, status)
        return
    for secret in FORBIDDEN:
        assert secret not in data, (target, data[:300])
    assert status[:10] in (b"HTTP/1.1 4", b"HTTP/1.0 4") or status[:10] == b"", (target, status)


def test_the_check_would_catch_a_leak(tmp_path_factory):
    # The same request with symlinks allowed does return the secret: proof the
    # assertion above looks at the right bytes.
    tree = static_tree.build(tmp_path_factory.mktemp("leak") / "base")
    with serving("wsgi_app:app", *tree.static_args("--static-follow-symlinks"), workers=1) as t:
        assert SECRET in send_raw(t, b"/static/link-out.txt")
