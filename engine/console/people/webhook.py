"""One webhook POST, to the address that was checked.

The URL's host name is resolved once per try; on a shared console each address it answers is
checked (a job's own URL may reach only public addresses), and the connection goes to one of
those same addresses. A second lookup, as a plain HTTP client makes to connect, could answer
differently (DNS rebinding: public when checked, private when connected). The request still names
the URL's host: in the Host header, and for TLS, whose certificate is verified for that name (SNI).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable

import httpx

# host, port -> the addresses it resolves to, in the order to try them
Resolver = Callable[[str, int], list[str]]
MAX_ADDRESSES = 3  # tried in turn, each within the timeout: a bounded time per try
INSIDE = ("the address is on this machine or a private network, which a job's notify_url may "
          "not reach on a shared console")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))  # in order, without repeats


def is_inside(address: str) -> bool:
    """Whether an address is this machine, a private network, or anything else not public."""
    return not ipaddress.ip_address(address.split("%")[0]).is_global


def reaches_inside(url: str, resolve: Resolver = system_resolver) -> bool:
    """Whether the URL's host is (or resolves to) an inside address; an unresolvable one is not
    (its delivery will fail, and say so)."""
    try:
        target = httpx.URL(url)
        return any(is_inside(address) for address in resolve(_host(target), _port(target)))
    except (OSError, ValueError, httpx.InvalidURL):
        return False


class WebhookClient:
    """Posts JSON bodies to webhooks, each connection to an address checked for that post.
    Redirects are not followed (one could lead a checked URL elsewhere) and no proxy is used
    (the connection must go to the checked address). One per sending thread; `verify` is the
    TLS context that checks certificates (tests give one trusting their own authority)."""

    def __init__(self, timeout_s: float, resolve: Resolver = system_resolver,
                 verify: ssl.SSLContext | bool = True):
        self.resolve = resolve
        if verify is True:  # the usual CAs, or SSL_CERT_FILE/SSL_CERT_DIR where set
            verify = httpx.create_ssl_context(trust_env=True)
        # No kept-alive connections: a pooled one is keyed by address alone, and could carry
        # one name's verified TLS session to another name at the same address.
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False,
                                 verify=verify, limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self.http.close()

    def post(self, url: str, body: bytes, public_only: bool) -> str | None:
        """Deliver `body`; None when delivered, else what went wrong (one line)."""
        try:
            target = httpx.URL(url)
            addresses = self.resolve(_host(target), _port(target))
        except httpx.InvalidURL as exc:
            return f"invalid URL: {exc}"[:200]
        except (OSError, UnicodeError) as exc:
            return f"cannot resolve {_host(target)}: {exc}"[:200]
        if not addresses:
            return f"cannot resolve {_host(target)}: no address"
        if public_only and any(is_inside(address) for address in addresses):
            return INSIDE
        problem = ""
        for address in addresses[:MAX_ADDRESSES]:  # the next one when one does not connect
            try:
                status = self._send(target, address, body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.InvalidURL) as exc:
                problem = _describe(exc)  # also an answer that cannot stand in a URL
                continue
            except httpx.HTTPError as exc:
                return _describe(exc)
            return None if 200 <= status < 300 else f"HTTP {status}"
        return problem

    def _send(self, target: httpx.URL, address: str, body: bytes) -> int:
        """The response's status; its body, which nobody reads, is not downloaded."""
        with self.http.stream(
                "POST", target.copy_with(host=address), content=body,
                headers={"Host": target.netloc.decode("ascii"),
                         "Content-Type": "application/json", "User-Agent": "TrainDeck"},
                extensions={"sni_hostname": _host(target)}) as response:
            return response.status_code


def _host(target: httpx.URL) -> str:
    return target.raw_host.decode("ascii")  # an international name in its ASCII (IDNA) form


def _port(target: httpx.URL) -> int:
    return target.port or (443 if target.scheme == "https" else 80)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
