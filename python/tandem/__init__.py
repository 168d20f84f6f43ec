"""tandem: a Rust front and a supervised pool of Python workers for WSGI apps.

Run it as ``tandem APP_MODULE`` (see ``tandem --help``). The native half
lives in ``tandem._native``; this package only hands control to it.
"""

from tandem._native import FileWrapper, __version__

__all__ = ["FileWrapper", "__version__"]
