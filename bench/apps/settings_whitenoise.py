"""The example site's settings with WhiteNoise serving /static/ from Django.

bench/setup.sh copies this next to the site's settings (as
mysite/settings_whitenoise.py); the gunicorn and granian runs of the Django
scenarios use it, so Django itself serves the hashed static files, as in a
deployment without nginx.
"""

from mysite.settings import *  # noqa: F403
from mysite.settings import MIDDLEWARE

MIDDLEWARE = [
    MIDDLEWARE[0],  # SecurityMiddleware first, then WhiteNoise, as its docs say
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[1:],
]
