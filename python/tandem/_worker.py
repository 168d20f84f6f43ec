"""Entry point of a tandem worker process.

The master starts ``python -m tandem._worker APP --requests-fd N
--replies-fd M ...`` with the interpreter that started tandem; with
``--preload`` it starts ``... APP --template CONTROL_FD`` instead, which
imports the app once and forks workers. This module sets up the import
path, imports the app the way gunicorn does (``module:callable``, or
``module`` meaning ``module:application``), then hands the sockets to the
native worker loop. It exits with code 4 when the app can't be loaded,
which tells the master not to respawn in a loop.
"""

import argparse
import faulthandler
import importlib
import os
import signal
import socket
import sys
import traceback

APP_LOAD_ERROR = 4


class AppLoadError(Exception):
    """The app target names something that isn't a WSGI callable."""


def load_app(target: str):
    """Imports ``module:callable`` (or ``module``, meaning its ``application``).

    The callable part may be a dotted attribute path, or a call of a factory
    with no arguments, like ``myapp:create_app()``.
    """
    module_name, _, attr = target.partition(":")
    attr = attr or "application"
    module = importlib.import_module(module_name)
    factory = attr.endswith("()")
    obj = module
    for part in attr[:-2].split(".") if factory else attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"Failed to find attribute {attr!r} in {module_name!r}.") from None
    if factory:
        obj = obj()
    if not callable(obj):
        raise AppLoadError(f"Application object {target!r} is not callable.")
    return obj


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="tandem._worker")
    parser.add_argument("app")
    parser.add_argument("--requests-fd", type=int)
    parser.add_argument("--replies-fd", type=int)
    parser.add_argument("--template", type=int, metavar="CONTROL_FD")
    parser.add_argument("--pythonpath", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-requests", type=int, default=0)
    parser.add_argument("--max-memory", type=int, default=0)
    args = parser.parse_args(argv)

    # Ctrl-C reaches the whole process group; the master decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A hung worker gets SIGABRT before SIGKILL: print where it hung.
    faulthandler.enable()

    for path in reversed([p for p in args.pythonpath.split(os.pathsep) if p]):
        sys.path.insert(0, path)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    try:
        app = load_app(args.app)
    except AppLoadError as err:
        print(f"[tandem worker {os.getpid()}] {err}", file=sys.stderr)
        sys.exit(APP_LOAD_ERROR)
    except BaseException:
        traceback.print_exc()
        sys.exit(APP_LOAD_ERROR)

    if args.template is not None:
        run_template(app, args)
        return

    from tandem import _native

    _native.serve(
        app,
        args.requests_fd,
        args.replies_fd,
        threads=args.threads,
        max_requests=args.max_requests,
        max_memory=args.max_memory,
    )


def run_template(app, args) -> None:
    """``--preload``: hold the imported app and fork workers from it.

    The master speaks to this process over a SOCK_SEQPACKET socket, one
    ASCII message per record:

    - master to template: ``fork MAX_REQUESTS`` with two descriptors attached
      (the generation's request queue and the new worker's reply socket);
    - template to master: ``ready`` once the app is imported,
      ``forked PID`` for each fork, ``exited PID WAITSTATUS`` when a worker
      it forked is reaped.

    When the master closes the socket, the template waits for its workers
    to finish and exits.
    """
    from tandem import _native

    control = socket.socket(fileno=args.template)

    def reap(signum=None, frame=None):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            try:
                control.send(b"exited %d %d" % (pid, status))
            except OSError:
                pass

    signal.signal(signal.SIGCHLD, reap)
    control.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 256, 4)
        except ConnectionError:
            break
        if not message:
            break
        command, _, argument = message.partition(b" ")
        if command != b"fork" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            print(f"[tandem template {os.getpid()}] bad command {message!r}", file=sys.stderr)
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            control.close()
            code = 0
            try:
                _native.serve(
                    app,
                    fds[0],
                    fds[1],
                    threads=args.threads,
                    max_requests=int(argument or 0),
                    max_memory=args.max_memory,
                )
            except BaseException:  # noqa: BLE001 - a worker must never return into the template's loop
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        control.send(b"forked %d" % pid)
    # The master is done with this generation: let the workers finish.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    main()
