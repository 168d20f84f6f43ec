"""The WSGI environ the app sees (PEP 3333)."""

import pytest
from conftest import serving


def raw_get(path, headers=b"", host=b"Host: example.com:8123\r\n"):
    return b"GET " + path + b" HTTP/1.1\r\n" + host + headers + b"\r\n"


@pytest.fixture(scope="module")
def environ(server):
    with server.raw() as c:
        c.send(
            b"POST /environ?a=1&b=%20x HTTP/1.1\r\nHost: example.com:8123\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n"
            b"X-Custom: yes\r\n\r\nabc"
        )
        r = c.read_response("POST")
        client_port = c.sock.getsockname()[1]
    assert r.status == 200
    return r.json(), client_port


def test_environ_is_a_plain_dict(environ):
    env, _ = environ
    assert env["__environ_type__"][0] == "dict"


@pytest.mark.parametrize(
    "key, type_name, value",
    [
        ("REQUEST_METHOD", "str", "POST"),
        ("SCRIPT_NAME", "str", ""),
        ("PATH_INFO", "str", "/environ"),
        ("QUERY_STRING", "str", "a=1&b=%20x"),
        ("CONTENT_TYPE", "str", "application/x-www-form-urlencoded"),
        ("CONTENT_LENGTH", "str", "3"),
        ("SERVER_NAME", "str", "example.com"),
        ("SERVER_PORT", "str", "8123"),
        ("SERVER_PROTOCOL", "str", "HTTP/1.1"),
        ("REMOTE_ADDR", "str", "127.0.0.1"),
        ("HTTP_HOST", "str", "example.com:8123"),
        ("HTTP_X_CUSTOM", "str", "yes"),
        ("wsgi.version", "tuple", [1, 0]),
        ("wsgi.url_scheme", "str", "http"),
        ("wsgi.multithread", "bool", False),
        ("wsgi.multiprocess", "bool", True),
        ("wsgi.run_once", "bool", False),
        ("wsgi.input_terminated", "bool", True),
    ],
)
def test_environ_key(environ, key, type_name, value):
    env, _ = environ
    assert key in env, sorted(env)
    assert env[key] == [type_name, value]


def test_remote_port_is_the_clients(environ):
    env, client_port = environ
    assert env["REMOTE_PORT"] == ["str", str(client_port)]


def test_content_headers_are_not_duplicated_as_http(environ):
    env, _ = environ
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_every_header_and_cgi_value_is_a_str(environ):
    env, _ = environ
    for key, value in env.items():
        if key.isupper():
            assert value[0] == "str", (key, value)


def test_input_errors_and_file_wrapper_present(environ):
    env, _ = environ
    assert env["__input_methods__"] == ["read", "readline", "readlines", "__iter__"]
    assert env["__errors_methods__"] == ["write", "writelines", "flush"]
    assert "wsgi.file_wrapper" in env


def test_get_without_body_has_no_content_length_or_empty(server):
    env = server.get("/environ").json()
    assert env.get("CONTENT_LENGTH", ["str", ""])[1] in ("", "0")
    assert env["QUERY_STRING"] == ["str", ""]
    assert env["REQUEST_METHOD"] == ["str", "GET"]


def test_server_name_without_port_in_host(server):
    (r,) = server.exchange(raw_get(b"/echo", host=b"Host: example.org\r\n"))
    body = r.json()
    assert body["server_name"] == "example.org"
    assert body["server_port"] == "80"


def test_percent_encoded_utf8_path_is_decoded_and_latin1_mapped(server):
    (r,) = server.exchange(raw_get(b"/echo/caf%C3%A9?q=caf%C3%A9&x=a+b"))
    body = r.json()
    assert body["path"].encode("latin-1") == b"/echo/caf\xc3\xa9"
    assert body["path"].encode("latin-1").decode("utf-8") == "/echo/café"
    assert body["query"] == "q=caf%C3%A9&x=a+b"  # QUERY_STRING stays raw


def test_percent_encoded_specials_in_path(server):
    (r,) = server.exchange(raw_get(b"/echo/a%20b%2Fc%25d%3Fe"))
    body = r.json()
    assert body["path"] == "/echo/a b/c%d?e"
    assert body["query"] == ""


def test_non_ascii_path_via_http_client(server):
    r = server.get("/echo/%E2%82%AC%20euro")
    assert r.json()["path"].encode("latin-1").decode("utf-8") == "/echo/€ euro"


def test_underscore_headers_are_dropped(server):
    (r,) = server.exchange(
        raw_get(
            b"/echo",
            b"X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4\r\nFoo_Bar: x\r\n",
        )
    )
    headers = r.json()["headers"]
    assert headers["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert "HTTP_FOO_BAR" not in headers


def test_underscore_header_alone_does_not_spoof(server):
    (r,) = server.exchange(raw_get(b"/echo", b"X_Forwarded_For: 6.6.6.6\r\n"))
    headers = r.json()["headers"]
    assert "HTTP_X_FORWARDED_FOR" not in headers
    assert "6.6.6.6" not in str(headers)


def test_repeated_headers_are_joined(server):
    (r,) = server.exchange(
        raw_get(b"/echo", b"X-Multi: a\r\nX-Other: o\r\nx-multi: b\r\nX-Multi: c, d\r\n")
    )
    headers = r.json()["headers"]
    assert headers["HTTP_X_MULTI"] == "a, b, c, d"
    assert headers["HTTP_X_OTHER"] == "o"


def test_header_names_are_upper_cased_with_dashes_as_underscores(server):
    (r,) = server.exchange(raw_get(b"/echo", b"x-lower-case-name: v\r\nAccept: */*\r\n"))
    headers = r.json()["headers"]
    assert headers["HTTP_X_LOWER_CASE_NAME"] == "v"
    assert headers["HTTP_ACCEPT"] == "*/*"


def test_non_ascii_header_value_is_latin1_mapped(server):
    (r,) = server.exchange(raw_get(b"/echo", b"X-Bytes: caf\xc3\xa9\r\n"))
    value = r.json()["headers"]["HTTP_X_BYTES"]
    assert value.encode("latin-1") == b"caf\xc3\xa9"


def test_wsgi_errors_goes_to_the_error_log(server):
    mark = server.mark()
    r = server.get("/errors?marker=errors-marker-7f3a")
    assert r.status == 200
    server.wait_for_log(r"errors-marker-7f3a-write", timeout=10, since=mark)
    server.wait_for_log(r"errors-marker-7f3a-lines", timeout=10, since=mark)


@pytest.fixture(scope="module")
def mounted():
    with serving("wsgi_app:app", "--root-path", "/mount", workers=1) as t:
        yield t


def test_root_path_sets_script_name(mounted):
    body = mounted.get("/mount/echo/x?y=1").json()
    assert body["script_name"] == "/mount"
    assert body["path"] == "/echo/x"
    assert body["query"] == "y=1"


def test_script_name_env_sets_root_path(tandem_factory):
    t = tandem_factory("wsgi_app:app", workers=1, env={"SCRIPT_NAME": "/app2"})
    body = t.get("/app2/echo").json()
    assert body["script_name"] == "/app2"
    assert body["path"] == "/echo"
