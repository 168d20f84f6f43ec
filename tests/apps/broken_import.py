"""An app module that fails at import time: tandem must exit (code 4), not respawn."""

raise RuntimeError("import-boom-marker: this module cannot be imported")


def app(environ, start_response):  # never reached
    start_response("200 OK", [])
    return [b""]
