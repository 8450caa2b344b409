"""ist: a lab for Independent Subnetwork Training research.

The library behind the ``ist`` command; see docs/python-api.md.
"""

from ist_cli._version import __version__

__all__ = ["__version__"]
