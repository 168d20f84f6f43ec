"""A directory tree for the static-file tests, with secrets planted outside the root.

base/
  secret.txt, site/secret.txt    SECRET, never to be served
  outside/secret2.txt            SECRET, reached only through symlinks
  site/static/                   the root served at /static/
  site/media/                    the root served at /static/deep/ (longest prefix)
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

SECRET = b"TOP-SECRET-7f3a9c-never-serve-this"
CSS = b"".join(b"body { color: #%06x; }\n" % i for i in range(200))  # ~4.4 KB, compresses well
BIG_SIZE = 1024 * 1024 + 17  # above the in-memory threshold: streamed from the file


def big_content():
    """Deterministic, incompressible-looking bytes (so ranges can be checked by value)."""
    out = bytearray()
    i = 0
    while len(out) < BIG_SIZE:
        out += hashlib.sha256(str(i).encode()).digest()
        i += 1
    return bytes(out[:BIG_SIZE])


@dataclass
class Tree:
    base: Path
    root: Path
    media: Path

    def static_args(self, *extra):
        return [
            "--static",
            f"/static/={self.root}",
            "--static",
            f"/static/deep/={self.media}",
            *extra,
        ]


def build(base: Path) -> Tree:
    base.mkdir(parents=True, exist_ok=True)
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret2.txt").write_bytes(SECRET + b"-2")
    site = base / "site"
    site.mkdir()
    (site / "secret.txt").write_bytes(SECRET + b"-site")
    root = site / "static"
    root.mkdir()
    media = site / "media"
    media.mkdir()
    (media / "m.txt").write_bytes(b"from media\n")

    (root / "app.css").write_bytes(CSS)
    (root / "app.0123456789ab.css").write_bytes(CSS)
    (root / "hello.txt").write_bytes(b"hello, static\n")
    (root / "data.json").write_bytes(b'{"a": 1}\n')
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    (root / "script.js").write_bytes(b"console.log('hi');\n" * 100)
    (root / "tiny.css").write_bytes(b"a{}\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "blob.zzzunknown").write_bytes(b"?")
    (root / "big.bin").write_bytes(big_content())
    # Precompressed siblings: markers, not real compressed data, so the test
    # sees exactly which file was sent.
    (root / "pre.css").write_bytes(CSS)
    (root / "pre.css.br").write_bytes(b"BROTLI-VARIANT")
    (root / "pre.css.zst").write_bytes(b"ZSTD-VARIANT")
    (root / "pre.css.gz").write_bytes(b"GZIP-VARIANT")
    (root / "onlygz.js").write_bytes(b"var x = 1;\n" * 200)
    (root / "onlygz.js.gz").write_bytes(b"GZIP-ONLY-VARIANT")
    # Hidden things.
    (root / ".env").write_bytes(SECRET + b"-dotenv")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET + b"-git")
    # Directories.
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"<h1>sub index</h1>\n")
    (root / "sub" / "page.html").write_bytes(b"<p>page</p>\n")
    (root / "nodir").mkdir()
    (root / "nodir" / "listed-name.txt").write_bytes(b"x")
    # Symlinks: one inside the root, two leading out of it.
    os.symlink("app.css", root / "link-in.css")
    os.symlink(base / "secret.txt", root / "link-out.txt")
    os.symlink(base / "outside", root / "link-out-dir")
    (root / "sneaky.css").write_bytes(CSS)
    os.symlink(base / "secret.txt", root / "sneaky.css.gz")  # ...and a sibling that leads out
    os.mkfifo(root / "fifo.txt")
    return Tree(base=base, root=root, media=media)
