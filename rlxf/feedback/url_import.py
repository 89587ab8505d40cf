"""Item files fetched by URL for the admin's import form: only from allow-listed hosts that
resolve to public addresses, and from the very address that was checked (pinned), so a name
that resolves to a public address for the check and to 127.0.0.1 for the fetch (DNS rebinding)
cannot reach the machine's own services."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IMPORT_TIMEOUT_SECONDS = 30.0
"""Longest an import may take from connecting to the last byte, however slowly a host trickles."""


class UnsafeURL(ValueError):
    """The URL may not be fetched at all."""


class ImportFailed(ValueError):
    """The host was asked and the file could not be had (refused, redirected, missing, too slow)."""


class ImportTooLarge(ImportFailed):
    """The file is larger than the app takes in one request."""


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the checks and the one address every connection for it must use."""

    url: str
    host: str
    address: str

    @property
    def pinned(self) -> str:
        """``url`` with its host replaced by the checked address, the port and path kept."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    @property
    def host_header(self) -> str:
        """The Host header: the name (an IPv6 literal in brackets) and the port when given."""
        port = urlsplit(self.url).port
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if port is None else f"{name}:{port}"


def check_import_url(url: str, allowed_hosts: list[str]) -> CheckedURL:
    """``url`` pinned to its address when its host is allow-listed and every address it resolves
    to is public; else UnsafeURL (loopback, private, link-local such as 169.254.169.254, and the
    IPv6 forms that carry such an IPv4 address inside)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeURL(f"not a URL that can be imported ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL(f"only http(s) URLs can be imported, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("import URLs may not carry credentials")
    if port == 0:
        raise UnsafeURL("port 0 cannot be fetched from")
    host = parts.hostname.lower()
    if host not in {h.lower() for h in allowed_hosts}:
        raise UnsafeURL(f"host {host!r} is not in the import allow-list")
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeURL(f"host {host!r} does not resolve: {error}") from None
    addresses = [info[4][0].split("%")[0] for info in infos]
    for address in addresses:
        if not is_public(ipaddress.ip_address(address)):
            raise UnsafeURL(f"host {host!r} resolves to a non-public address ({address})")
    return CheckedURL(url=url, host=host, address=addresses[0])


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global unicast, and so is any IPv4 address an IPv6 one carries (mapped, 6to4, Teredo,
    NAT64): ``64:ff9b::a9fe:a9fe`` is the metadata service on a NAT64 network."""
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return True
    if int(ip) >> 32 == 0:  # ::a.b.c.d, IPv4-compatible (deprecated): nothing public is there
        return False
    embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if any(ip in network for network in _NAT64):
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(is_public(inner) for inner in embedded if inner is not None)


def fetch(
    checked: CheckedURL, max_bytes: int, timeout_seconds: float = IMPORT_TIMEOUT_SECONDS, transport=None
) -> bytes:
    """The body at ``checked``, from its pinned address (TLS still verified against the host's
    name), no redirects followed, no proxy from the environment; ImportFailed with the reason
    otherwise, and also when the body passes ``max_bytes`` or the whole exchange, headers
    included, takes longer than ``timeout_seconds``. ``transport``: an httpx transport to use
    instead of the network."""
    import httpx

    try:
        return asyncio.run(asyncio.wait_for(_download(checked, max_bytes, timeout_seconds, transport), timeout_seconds))
    except TimeoutError:
        raise ImportFailed(
            f"{checked.host} ({checked.address}) did not send the file within {timeout_seconds:g} s"
        ) from None
    except httpx.TimeoutException:
        raise ImportFailed(
            f"{checked.host} ({checked.address}) did not send the file within {timeout_seconds:g} s"
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise ImportFailed(f"could not fetch from {checked.host} ({checked.address}): {error}") from None


async def _download(checked: CheckedURL, max_bytes: int, timeout_seconds: float, transport) -> bytes:
    import httpx

    settings = {"follow_redirects": False, "trust_env": False, "timeout": timeout_seconds, "transport": transport}
    request = {"headers": {"Host": checked.host_header}, "extensions": {"sni_hostname": checked.host}}
    # trust_env=False keeps proxies out; the certificate settings of the environment still count
    async with (
        httpx.AsyncClient(verify=httpx.create_ssl_context(trust_env=True), **settings) as client,
        client.stream("GET", checked.pinned, **request) as response,
    ):
        refuse_status(response)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise ImportTooLarge(f"the file at that URL is larger than {max_bytes} bytes")
        return bytes(body)


def refuse_status(response) -> None:
    """ImportFailed unless the answer is a 200: a redirect (not followed: it could lead anywhere),
    a missing file, a server error."""
    if response.is_redirect:
        target = response.headers.get("location", "?")
        raise ImportFailed(f"the URL redirects (to {target}); redirects are not followed, import the final URL")
    if response.status_code != 200:
        raise ImportFailed(f"the host answered {response.status_code} {response.reason_phrase}")
