"""Type stub for tandem's native extension."""

from collections.abc import Callable, Iterator
from typing import Any

__version__: str

def main(args: list[str], python: str) -> int:
    """Runs the tandem master with ``args`` (no program name); returns the exit code."""

def serve(
    app: Callable[..., Any],
    requests_fd: int,
    replies_fd: int,
    threads: int = 1,
    max_requests: int = 0,
    max_memory: int = 0,
) -> None:
    """Runs the worker loop until the queue closes, SIGTERM, or a limit retires the worker."""

class FileWrapper:
    """``wsgi.file_wrapper``: sent straight from the file when it has a descriptor."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...
