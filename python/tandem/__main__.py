"""The ``tandem`` command: hands the command line to the native master."""

import sys


def main() -> None:
    from tandem import _native

    sys.exit(_native.main(sys.argv[1:], sys.executable))


if __name__ == "__main__":
    main()
