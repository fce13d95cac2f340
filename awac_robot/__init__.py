"""awac-robot: learn manipulation skills from demonstrations, improve them online with AWAC, deploy them safely."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("awac-robot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
