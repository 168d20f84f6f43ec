"""The ``tandem`` command: hands the command line to the native master.

Two subcommands are handled here, in Python, before that: ``tandem ctl``
and ``tandem top`` talk to a running master over its control socket. (To
serve a module named ``ctl`` or ``top``, write ``ctl:application``.)
"""

import sys


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "ctl":
        from tandem import ctl

        sys.exit(ctl.main(args[1:]))
    if args and args[0] == "top":
        from tandem import top

        sys.exit(top.main(args[1:]))
    from tandem import _native

    sys.exit(_native.main(args, sys.executable))


if __name__ == "__main__":
    main()
