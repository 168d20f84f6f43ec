"""Entry point of a tandem worker process.

The master starts ``python -m tandem._worker APP REQUESTS_FD REPLIES_FD``
with the interpreter that started tandem. This module sets up the import
path, imports the app the way gunicorn does (``module:callable``, or
``module`` meaning ``module:application``), then hands the two sockets to
the native worker loop. It exits with code 4 when the app can't be loaded,
which tells the master not to respawn in a loop.
"""

import argparse
import faulthandler
import importlib
import os
import signal
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
    parser.add_argument("requests_fd", type=int)
    parser.add_argument("replies_fd", type=int)
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

    from tandem import _native

    _native.serve(
        app,
        args.requests_fd,
        args.replies_fd,
        threads=args.threads,
        max_requests=args.max_requests,
        max_memory=args.max_memory,
    )


if __name__ == "__main__":
    main()
