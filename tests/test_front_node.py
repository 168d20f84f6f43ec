"""The features of a front node working together: an HTTP/2 client over TLS
talks to a tandem front (no app) that serves a static route and proxies the
rest to a tandem app node over HTTP/1.1, with an access log and metrics."""

import json
import re
import textwrap

import httpx
import trustme
from certs import ServerFiles, client_context
from conftest import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families


def test_h2_over_tls_through_a_front_node_to_an_app_node(tandem_factory, tmp_path):
    app_node = tandem_factory(
        "upstream_app:app", binds=("127.0.0.1:0",), workers=1, env={"NODE_NAME": "n1"}
    )
    static = tmp_path / "static"
    static.mkdir()
    (static / "site.css").write_bytes(b"body{}\n" * 100)
    config = tmp_path / "front.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[route]]
            prefix = "/static/"
            static = "{static}"

            [[route]]
            prefix = "/"
            proxy = "apps"

            [upstream.apps]
            servers = ["127.0.0.1:{app_node.port}"]
            """
        )
    )
    ca = trustme.CA()
    files = ServerFiles(ca, tmp_path)
    log = tmp_path / "access.log"
    metrics_port = free_port()
    front = tandem_factory(
        None,
        "--config",
        str(config),
        *files.args,
        "--access-logfile",
        str(log),
        "--access-log-format",
        "json",
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        workers=None,
    )

    with httpx.Client(http2=True, verify=client_context(ca), timeout=15) as client:
        base = f"https://localhost:{front.port}"
        r = client.post(f"{base}/who?x=1", content=b"payload", headers={"X-Test": "yes"})
        assert r.http_version == "HTTP/2" and r.status_code == 200
        seen = r.json()
        assert seen["node"] == "n1" and seen["method"] == "POST" and seen["query"] == "x=1"
        assert seen["body_len"] == len(b"payload")
        headers = seen["headers"]
        assert headers["HTTP_X_TEST"] == "yes"
        assert headers["HTTP_HOST"] == f"localhost:{front.port}"
        assert headers["HTTP_X_FORWARDED_PROTO"] == "https"
        assert headers["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
        css = client.get(f"{base}/static/site.css")
        assert css.http_version == "HTTP/2" and css.content == b"body{}\n" * 100

    def lines():
        return log.read_text().splitlines() if log.exists() else []

    wait_until(lambda: len(lines()) >= 2, message="two access log lines")
    entries = [json.loads(line) for line in lines()]
    assert [(e["method"], e["target"], e["protocol"], e["status"]) for e in entries] == [
        ("POST", "/who?x=1", "HTTP/2.0", 200),
        ("GET", "/static/site.css", "HTTP/2.0", 200),
    ]
    assert entries[1]["bytes_sent"] == len(b"body{}\n" * 100)

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tandem_requests":
            for sample in family.samples:
                if sample.name == "tandem_requests_total" and sample.value:
                    counts[(sample.labels["route"], sample.labels["code"])] = sample.value
    assert counts == {("proxy", "2xx"): 1, ("static", "2xx"): 1}, text
    assert re.search(r"tandem_open_connections \d", text)
