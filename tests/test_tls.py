"""TLS: --certfile/--keyfile (TLS 1.2 and 1.3, ALPN), certificate reload on
HUP, client certificates (--ca-certs), the handshake timeout, and start-up
errors that name the file."""

import http.client
import json
import signal
import socket
import ssl
import subprocess
import time

import pytest
import trustme
from certs import ServerFiles, client_context
from conftest import TANDEM_BIN, clean_env, run_tandem


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def files(ca, tmp_path):
    return ServerFiles(ca, tmp_path)


def tls_socket(address, ctx, timeout=10):
    raw = socket.create_connection(address, timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def get(address, ctx, path="/echo"):
    conn = http.client.HTTPSConnection(*address, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        r = conn.getresponse()
        return r.status, r.read(), conn.sock.version()
    finally:
        conn.close()


def peer_cert(address, ctx):
    with tls_socket(address, ctx) as s:
        return s.getpeercert(binary_form=True)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_versions_serve_https(tandem_factory, ca, files, version):
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    assert t.listeners[0].startswith("https://")
    status, body, negotiated = get(t.address, client_context(ca, version=version))
    assert status == 200
    assert (
        negotiated
        == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    )
    seen = json.loads(body)
    assert seen["url_scheme"] == "https"
    # No port in Host: the https default.
    assert seen["server_port"] == "443"


def test_alpn_offers_h2_then_http11(tandem_factory, ca, files):
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    for offered, chosen in [
        (["h2", "http/1.1"], "h2"),
        (["http/1.1", "h2"], "h2"),
        (["http/1.1"], "http/1.1"),
    ]:
        with tls_socket(t.address, client_context(ca, alpn=offered)) as s:
            assert s.selected_alpn_protocol() == chosen, offered


def test_no_http2_offers_only_http11(tandem_factory, ca, files):
    t = tandem_factory("wsgi_app:app", *files.args, "--no-http2", workers=1)
    with tls_socket(t.address, client_context(ca, alpn=["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "http/1.1"


def test_plaintext_client_is_refused_and_server_keeps_serving(tandem_factory, ca, files):
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    with socket.create_connection(t.address, timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1 200" not in data
    assert get(t.address, client_context(ca))[0] == 200
    t.wait_for_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed")


def test_stalled_handshake_is_closed_at_the_header_timeout(tandem_factory, files):
    t = tandem_factory("wsgi_app:app", *files.args, "--header-timeout", "1", workers=1)
    with socket.create_connection(t.address, timeout=10) as s:
        start = time.monotonic()
        s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        assert s.recv(100) == b""
        assert 0.8 < time.monotonic() - start < 5
    t.wait_for_log("TLS handshake incomplete after the header timeout")


def test_hup_reloads_the_certificate_without_dropping_connections(tandem_factory, ca, files):
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    ctx = client_context(ca)
    before = peer_cert(t.address, ctx)
    kept = http.client.HTTPSConnection(*t.address, context=ctx, timeout=10)
    kept.request("GET", "/hello")
    assert kept.getresponse().read() == b"Hello, world!\n"

    files.issue()
    mark = t.mark()
    t.signal(signal.SIGHUP)
    t.wait_for_log("reloaded TLS certificate", since=mark)
    after = peer_cert(t.address, ctx)
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert(files.cert.read_text())

    # The connection opened before the reload still works.
    kept.request("GET", "/hello")
    assert kept.getresponse().read() == b"Hello, world!\n"
    kept.close()


def test_hup_with_a_bad_certificate_keeps_the_old_one(tandem_factory, ca, files):
    t = tandem_factory("wsgi_app:app", *files.args, workers=1)
    ctx = client_context(ca)
    before = peer_cert(t.address, ctx)
    files.cert.write_text("not a certificate\n")
    mark = t.mark()
    t.signal(signal.SIGHUP)
    line = t.wait_for_log("keeping the current certificate", since=mark).string
    assert str(files.cert) in line and "ERROR" in line
    assert peer_cert(t.address, ctx) == before
    assert get(t.address, ctx)[0] == 200


def test_ca_certs_require_a_client_certificate(tandem_factory, ca, files, tmp_path):
    client_ca = trustme.CA()
    ca_file = tmp_path / "clients.pem"
    client_ca.cert_pem.write_to_path(str(ca_file))
    t = tandem_factory("wsgi_app:app", *files.args, "--ca-certs", str(ca_file), workers=1)

    with pytest.raises(
        (ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)
    ):
        get(t.address, client_context(ca))
    stranger = trustme.CA().issue_cert("client@example.com")
    with pytest.raises(
        (ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)
    ):
        get(t.address, client_context(ca, client_cert=stranger))

    good = client_ca.issue_cert("client@example.com")
    status, body, _ = get(t.address, client_context(ca, client_cert=good))
    assert status == 200 and json.loads(body)["url_scheme"] == "https"


@pytest.mark.parametrize(
    "which, expected",
    [
        ("cert", "cannot read certificate {cert}: No such file or directory"),
        ("key", "cannot read private key {key}: No such file or directory"),
        ("garbage", "cannot read certificate {cert}: no PEM certificate"),
        ("mismatch", "cannot read private key {key}: it does not match the certificate in {cert}"),
        ("ca", "cannot read CA certificates {ca}: No such file or directory"),
    ],
)
def test_unusable_files_are_one_line_errors(ca, tmp_path, which, expected):
    files = ServerFiles(ca, tmp_path)
    cert, key, ca_file = files.cert, files.key, tmp_path / "ca.pem"
    args = ["--certfile", str(cert), "--keyfile", str(key)]
    if which == "cert":
        cert.unlink()
    elif which == "key":
        key.unlink()
    elif which == "garbage":
        cert.write_text("hello\n")
    elif which == "mismatch":
        ServerFiles(ca, tmp_path, name="other").key.replace(key)
    elif which == "ca":
        args += ["--ca-certs", str(ca_file)]
    r = run_tandem([*args, "-b", "127.0.0.1:0", "wsgi_app:app"])
    assert r.returncode == 1, r.stderr
    lines = r.stderr_lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("tandem: error: ")
    assert expected.format(cert=cert, key=key, ca=ca_file) in lines[0]


def test_keyfile_without_certfile_is_a_usage_error(tmp_path):
    r = run_tandem(["--keyfile", str(tmp_path / "k.pem"), "wsgi_app:app"])
    assert r.returncode == 2
    assert "--certfile" in r.stderr and len(r.stderr_lines) == 1


def test_refused_heads_are_answered_over_tls(tandem_factory, ca, files):
    # The HTTP/1.1 guard sits inside TLS: a refused head still gets its status.
    t = tandem_factory("wsgi_app:app", *files.args, "--limit-request-line", "100", workers=1)
    with tls_socket(t.address, client_context(ca)) as s:
        s.sendall(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 414 ")


def test_control_socket_reload_reads_the_certificate_too(tandem_factory, ca, files, tmp_path):
    sock = tmp_path / "ctl.sock"
    t = tandem_factory("wsgi_app:app", *files.args, "--control-socket", str(sock), workers=1)
    ctx = client_context(ca)
    before = peer_cert(t.address, ctx)
    files.issue()
    mark = t.mark()
    r = subprocess.run(
        [TANDEM_BIN, "ctl", "-s", str(sock), "reload"],
        capture_output=True,
        text=True,
        timeout=15,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr
    t.wait_for_log("control socket: reloaded TLS certificate", since=mark)
    assert peer_cert(t.address, ctx) not in (before, None)
