"""Start a server in a session of its own, wait until it answers, stop its group.

Only the process group this module started is ever signalled: the server is
started with start_new_session=True, so its pid is the group id, and every
worker it forks stays in that group unless it leaves on purpose.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from harness import BenchFailed


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def first_line_of(argv: list[str]) -> str:
    """The first line a short command prints (for versions), or '?'."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e.__class__.__name__})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def process_stats():
    """(pid, fields) for every process in /proc/PID/stat. fields start at
    stat's field 3, so fields[0] is the state, fields[2] the process group
    and fields[11:15] utime, stime, cutime and cstime."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry.name), fields


class Running:
    """A server started in its own session, its output going to log_path."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict, log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            self._log.close()
            raise
        self.pgid = self.proc.pid  # a session leader's pid is its process group id

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, url: str, expect_body: bytes, timeout: float) -> None:
        """Poll url until it answers 200 with expect_body (or, for 8 bytes or
        more, a body containing it); BenchFailed otherwise."""
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchFailed(
                    f"{self.name} exited with {self.proc.returncode} before answering:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    body = resp.read()
                    # Exact for tiny bodies; a page only has to contain it.
                    if resp.status == 200 and (
                        body == expect_body or (len(expect_body) >= 8 and expect_body in body)
                    ):
                        return
                    last_error = f"status {resp.status}, body {body[:80]!r}"
            except OSError as e:  # refused while binding, reset, HTTPError, ...
                last_error = str(e)
            time.sleep(0.1)
        raise BenchFailed(
            f"{self.name} not ready after {timeout:.0f}s ({last_error}):\n" + self.log_tail()
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchFailed(
                f"{self.name} exited with {self.proc.returncode} during the run:\n"
                + self.log_tail()
            )

    def _group_alive(self) -> bool:
        """Whether any process of our group still runs (zombies do not count)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return any(
            int(fields[2]) == self.pgid and fields[0] not in ("Z", "X")
            for _, fields in process_stats()
        )

    def stop(self, timeout: float) -> None:
        """SIGTERM the group we started; SIGKILL whatever is left after timeout."""
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader; the group id stays ours while members live
            if not self._group_alive():
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
