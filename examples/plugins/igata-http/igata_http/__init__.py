"""igata-http: an ``http``/``https`` loader with a host allow-list, and a ``webhook`` sink.

An example of a third-party igata plugin that uses only igata's public API.
"""

__version__ = "0.1.0"
