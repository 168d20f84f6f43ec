"""``tandem ctl``: talk to a running tandem over its control socket.

The protocol is one JSON object per line each way (see ``src/control``).
This module is also the client ``tandem top`` uses.
"""

import argparse
import glob
import json
import os
import socket
import sys

USAGE_ERROR = 2


class CtlError(Exception):
    """A problem worth one line on stderr (no socket, refused command...)."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(path):
    name = os.path.basename(path)
    try:
        return int(name[len("tandem-") : -len(".sock")])
    except ValueError:
        return None


def default_dir():
    """Where tandem puts its control socket by default (as the master decides)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return runtime
    return "/tmp"


def find_socket(socket_path=None, pid_file=None):
    """The control socket to use: given, named by a pid file, or the only
    live ``tandem-PID.sock`` in the default places."""
    if socket_path:
        return socket_path
    if os.environ.get("TANDEM_CONTROL_SOCKET"):
        return os.environ["TANDEM_CONTROL_SOCKET"]
    if pid_file:
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError) as e:
            raise CtlError(f"cannot read pid file {pid_file}: {e}") from e
        path = os.path.join(default_dir(), f"tandem-{pid}.sock")
        if os.path.exists(path):
            return path
        raise CtlError(
            f"no control socket for tandem {pid} (started with --control-socket? pass -s PATH)"
        )
    found = []
    for path in sorted(glob.glob(os.path.join(default_dir(), "tandem-*.sock"))):
        pid = _pid_of(path)
        if pid is not None and _alive(pid):
            found.append(path)
    if not found:
        raise CtlError("no running tandem found (pass -s PATH or --pid FILE)")
    if len(found) > 1:
        raise CtlError("several tandems are running, choose one with -s: " + ", ".join(found))
    return found[0]


class Client:
    """One connection to a control socket; ``call`` sends a command and
    returns the answer (raising CtlError if tandem refused it)."""

    def __init__(self, path, timeout=5.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise CtlError(f"cannot connect to {path}: {e.strerror or e}") from e
        self.reader = self.sock.makefile("rb")

    def call(self, cmd, **fields):
        request = json.dumps({"cmd": cmd, **fields}) + "\n"
        try:
            self.sock.sendall(request.encode())
            line = self.reader.readline()
        except OSError as e:
            raise CtlError(f"control socket {self.path}: {e}") from e
        if not line:
            raise CtlError(f"tandem closed the control socket {self.path}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise CtlError(answer.get("error", "refused"))
        return answer

    def close(self):
        self.reader.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _mib(n):
    return f"{n / (1 << 20):.1f} MiB"


def format_status(s):
    lines = [
        f"tandem {s['version']} pid {s['pid']} serving '{s['app']}', up {s['uptime_secs']:.0f}s",
        f"generation {s['generation']}{' (reloading)' if s['reloading'] else ''}, "
        f"{s['target_workers']} workers wanted, queue {s['queue_depth']}, "
        f"in flight {s['in_flight']}, "
        f"{s['requests_total']} requests answered",
        f"{'PID':>8} {'STATE':<9} {'GEN':>4} {'SERVED':>8} {'RSS':>10} {'AGE':>7}  CURRENT",
    ]
    for w in s["workers"]:
        cur = w["current"]
        current = f"{cur['request']} ({cur['secs']:.1f}s)" if cur else "-"
        lines.append(
            f"{w['pid']:>8} {w['state']:<9} {w['generation']:>4} {w['served']:>8} "
            f"{_mib(w['rss_bytes']):>10} {w['age_secs']:>6.0f}s  {current}"
        )
    return "\n".join(lines)


def _delta(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected +N or -N, got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("expected a non-zero number like +1 or -1")
    return value


def parser():
    p = argparse.ArgumentParser(prog="tandem ctl", description="Control a running tandem.")
    p.add_argument(
        "-s", "--socket", help="control socket path (default: the only running tandem's)"
    )
    p.add_argument("--pid", metavar="FILE", help="find the tandem whose --pid file this is")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="the master and its workers")
    status.add_argument("--json", action="store_true", help="print the raw JSON answer")
    sub.add_parser("reload", help="start a new generation of workers (as HUP)")
    sub.add_parser("stop", help="stop gracefully (as TERM)")
    workers = sub.add_parser("workers", help="add or remove workers: +N or -N (as TTIN/TTOU)")
    workers.add_argument("delta", type=_delta, metavar="+N|-N")
    return p


def main(argv):
    args = parser().parse_args(argv)
    try:
        path = find_socket(args.socket, args.pid)
        with Client(path) as client:
            if args.command == "status":
                answer = client.call("status")
                print(json.dumps(answer, indent=2) if args.json else format_status(answer))
            elif args.command == "workers":
                answer = client.call("workers", delta=args.delta)
                print(f"going to {answer['target']} workers")
            elif args.command == "reload":
                answer = client.call("reload")
                print(f"reloading: booting generation {answer['generation']}")
            else:
                client.call("stop")
                print("stopping")
    except CtlError as e:
        print(f"tandem ctl: error: {e}", file=sys.stderr)
        return 1
    return 0
