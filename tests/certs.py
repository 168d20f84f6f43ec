"""Certificates for the TLS tests, made with trustme: a CA, server
certificates for localhost/127.0.0.1 written as PEM files, client contexts."""

import ssl
from pathlib import Path

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


class ServerFiles:
    """A server certificate chain and key, as --certfile/--keyfile files."""

    def __init__(self, ca, directory, name="server"):
        self.ca = ca
        self.cert = Path(directory) / f"{name}-cert.pem"
        self.key = Path(directory) / f"{name}-key.pem"
        self.issue()

    def issue(self):
        """Writes a fresh certificate (new serial number) over the files."""
        leaf = self.ca.issue_cert(*SERVER_NAMES)
        leaf.private_key_pem.write_to_path(str(self.key))
        with open(self.cert, "wb") as f:
            for blob in leaf.cert_chain_pems:
                f.write(blob.bytes())
        return leaf

    @property
    def args(self):
        return ["--certfile", str(self.cert), "--keyfile", str(self.key)]


def client_context(ca, alpn=None, version=None, client_cert=None):
    """A client context trusting `ca`; `version` pins one TLS version."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if client_cert is not None:
        client_cert.configure_cert(ctx)
    return ctx
