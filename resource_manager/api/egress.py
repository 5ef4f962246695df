"""Outgoing webhook requests: where they may go (SSRF), to the address checked, signed, never redirected.

WEBHOOK_ALLOW is a comma-separated allow-list (default "public"):
- `public`: any globally routable address; never loopback, private (10/8, 172.16/12, 192.168/16,
  fc00::/7), link-local (169.254/16: cloud metadata; fe80::/10), shared, reserved or multicast;
- an address or a CIDR (`127.0.0.1`, `10.20.0.0/16`, `fd00::/8`): addresses in it;
- a host name (`hooks.example.com`, or `*.example.com` for its subdomains): that name, whatever
  it resolves to, except link-local, multicast and unspecified addresses, which only an address or
  CIDR entry allows.
A target is allowed when its name matches a host entry, or every address it resolves to is allowed.
The name is resolved when each request is sent, checked, and the connection made to the address
checked (the Host header and TLS name stay the URL's): a DNS answer that changes between the check
and the connection (rebinding) cannot redirect it. Redirects are refused (a 3xx is a failed attempt),
proxies from the environment are not used.
"""

import hashlib
import hmac
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .. import __version__

SCHEMES = {"http": 80, "https": 443}
USER_AGENT = f"ResourceManager-Webhooks/{__version__}"
ALWAYS_NAMED = ("link-local", "multicast", "unspecified")  # even for an allowed host name: CIDR entries only


class Refused(ValueError):
    """The target is not allowed (or cannot be resolved); the message says why."""


class AllowList:
    """The parsed WEBHOOK_ALLOW. Raises ValueError naming an entry that is neither a host nor an address."""

    def __init__(self, text="public"):
        self.text = text or "public"
        self.public = False
        self.networks, self.hosts = [], []
        for raw in self.text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "public":
                self.public = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry[2:] if entry.startswith("*.") else entry
            if not name or not all(part and part.replace("-", "").replace("_", "").isalnum()
                                   for part in name.split(".")):
                raise ValueError(f"WEBHOOK_ALLOW: {raw.strip()!r} is not a host name, address or CIDR")
            self.hosts.append(entry)

    def names(self, host):
        """Return whether a host entry names `host`."""
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts)

    def address_allowed(self, address, named=False):
        """Return whether `address` may be connected to (`named`: its host name is allowed by name)."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.networks):
            return True
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            return False
        return named or (self.public and ip.is_global)

    def describe(self):
        return f"WEBHOOK_ALLOW={self.text}"


def split_url(url):
    """Return (scheme, host, port) of a webhook URL. Raises Refused when it is not one we send to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise Refused(f"is not a URL: {e}") from None
    if parts.scheme not in SCHEMES:
        raise Refused("must start with http:// or https://")
    if not parts.hostname:
        raise Refused("has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not hold credentials: receivers check the X-RM-Signature instead")
    if parts.fragment:
        raise Refused("must not have a #fragment")
    return parts.scheme, parts.hostname, port or SCHEMES[parts.scheme]


def resolve(allow, host, port):
    """Return the address to connect to for `host`, every address it resolves to checked. Raises Refused."""
    named = allow.names(host)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise Refused(f"host {host} does not resolve: {e}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
    bad = [a for a in addresses if not allow.address_allowed(a, named)]
    if bad or not addresses:
        raise Refused(f"{host} resolves to {', '.join(bad) or 'nothing'}, which {allow.describe()} does not allow")
    return addresses[0]


def check(allow, url):
    """Refuse a URL we would not send to now (at creation). Raises Refused."""
    _scheme, host, port = split_url(url)
    resolve(allow, host, port)


def signature(secret, timestamp, body):
    """Return the X-RM-Signature value: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body.encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class _Pinned(HTTPAdapter):
    """Connects to one address, whatever the URL's host resolves to now; Host header and TLS name stay the URL's."""

    def __init__(self, address):
        self.address = address
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = host_params["host"]
            pool_kwargs["assert_hostname"] = host_params["host"]
        host_params["host"] = self.address
        return host_params, pool_kwargs


def post(allow, url, body, secret, headers, timeout, now=None):
    """POST a signed event body to `url`; return {ok, status, error, ms}. Never raises for the receiver's faults."""
    started = time.monotonic()
    outcome = {"ok": False, "status": None, "error": None}
    try:
        scheme, host, port = split_url(url)
        address = resolve(allow, host, port)
        stamp = int(now if now is not None else time.time())
        sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                "X-RM-Signature": signature(secret, stamp, body), **headers}
        default_port = port == SCHEMES[scheme]
        sent["Host"] = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment: we connect to the address checked
            session.mount(f"{scheme}://", _Pinned(address))
            response = session.post(url, data=body.encode(), headers=sent, allow_redirects=False,
                                    timeout=(min(5.0, timeout), timeout), stream=True)
            response.close()
        outcome["status"] = response.status_code
        if 200 <= response.status_code < 300:
            outcome["ok"] = True
        elif 300 <= response.status_code < 400:
            target = response.headers.get("Location", "?")[:200]
            outcome["error"] = f"redirect refused ({response.status_code} to {target})"
        else:
            outcome["error"] = f"HTTP {response.status_code}"
    except Refused as e:
        outcome["error"] = f"refused: {e}"
    except requests.Timeout:
        outcome["error"] = f"no answer within {timeout:g} s"
    except requests.RequestException as e:
        outcome["error"] = f"cannot connect: {type(e).__name__}: {str(e)[:200]}"
    outcome["ms"] = round((time.monotonic() - started) * 1000)
    return outcome
