"""The HTTP reverse proxy: routing, header policy, h11-driven streaming in both directions."""

from proxy.http.errors import BadRequest, HttpProxyError
from proxy.http.frontend import HttpFrontend
from proxy.http.routing import Route, RouteTable
from proxy.http.stats import HttpStats

__all__ = ["BadRequest", "HttpFrontend", "HttpProxyError", "HttpStats", "Route", "RouteTable"]
