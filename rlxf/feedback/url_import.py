"""Item files fetched by URL for the admin's import form: only from allow-listed hosts that
resolve to public addresses, and from the very address that was checked (pinned), so a name
that resolves to a public address for the check and to 127.0.0.1 for the fetch (DNS rebinding)
cannot reach the machine's own services."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IMPORT_TIMEOUT_SECONDS = 30.0
"""Longest an import may take from connecting to the last byte, however slowly a host trickles."""


class UnsafeURL(ValueError):
    """The URL may not be fetched at all."""


class ImportFailed(ValueError):
    """The host was asked and the file could not be had (refused, redirected, missing, too slow)."""


class ImportTooLarge(ImportFailed):
    pass


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
        port = urlsplit(self.url).port
        return self.host if port is None else f"{self.host}:{port}"


def check_import_url(url: str, allowed_hosts: list[str]) -> CheckedURL:
    """``url`` pinned to its address when its host is allow-listed and every address it resolves
    to is public; else UnsafeURL (loopback, private, link-local such as 169.254.169.254)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL(f"only http(s) URLs can be imported, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("import URLs may not carry credentials")
    host = parts.hostname.lower()
    if host not in {h.lower() for h in allowed_hosts}:
        raise UnsafeURL(f"host {host!r} is not in the import allow-list")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError) as error:
        raise UnsafeURL(f"host {host!r} does not resolve: {error}") from None
    addresses = [info[4][0].split("%")[0] for info in infos]
    for address in addresses:
        if not ipaddress.ip_address(address).is_global:
            raise UnsafeURL(f"host {host!r} resolves to a non-public address ({address})")
    return CheckedURL(url=url, host=host, address=addresses[0])


def fetch(checked: CheckedURL, max_bytes: int, timeout_seconds: float = IMPORT_TIMEOUT_SECONDS) -> bytes:
    """The body at ``checked``, from its pinned address (TLS still verified against the host's
    name), no redirects followed, no proxy from the environment; ImportFailed with the reason
    otherwise, and also when the body passes ``max_bytes`` or the whole takes ``timeout_seconds``."""
    import httpx

    deadline = time.monotonic() + timeout_seconds
    request = {
        "headers": {"Host": checked.host_header},
        "extensions": {"sni_hostname": checked.host},
    }
    try:
        with (
            httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout_seconds) as client,
            client.stream("GET", checked.pinned, **request) as response,
        ):
            refuse_status(response)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ImportTooLarge(f"the file at that URL is larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline passed")
            return bytes(body)
    except httpx.TimeoutException:
        raise ImportFailed(
            f"{checked.host} ({checked.address}) did not send the file within {timeout_seconds:g} s"
        ) from None
    except httpx.HTTPError as error:
        raise ImportFailed(f"could not fetch from {checked.host} ({checked.address}): {error}") from None


def refuse_status(response) -> None:
    if response.is_redirect:
        target = response.headers.get("location", "?")
        raise ImportFailed(f"the URL redirects (to {target}); redirects are not followed, import the final URL")
    if response.status_code != 200:
        raise ImportFailed(f"the host answered {response.status_code} {response.reason_phrase}")
