"""Tasks Server: HTTP requests scheduled for later, stored durably, retried."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tasks-server")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
