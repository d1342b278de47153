"""Redis URLs: parsing every form aqueue accepts, and masking their secrets.

Standalone (``redis://``, ``rediss://``, ``unix://``), Sentinel
(``redis+sentinel://``) and Cluster (``redis+cluster://``) URLs parse into a
:class:`RedisTarget`; a malformed one is a ``ConfigError`` that shows every
accepted form. :func:`mask_url` hides passwords wherever a URL may carry them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode

import msgspec

from .errors import ConfigError

__all__ = ["RedisTarget", "mask_url", "parse_redis_url"]

_URL_FORMS = (
    "redis://[user:password@]host:port/db, rediss://..., unix:///path.sock, "
    "redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db] "
    "or redis+cluster://[user:password@]host:port[,host:port...]"
)


class RedisTarget(msgspec.Struct, frozen=True):
    """What a Redis URL points at: one server, a Sentinel service or a Cluster.

    For ``standalone`` the URL itself is handed to the client as it is;
    ``hosts`` are the sentinels (``sentinel``) or the seed nodes (``cluster``).
    """

    kind: str
    """``"standalone"``, ``"sentinel"`` or ``"cluster"``."""
    hosts: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def describe(self) -> str:
        """The target without secrets, for banners and ``inspect``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        if self.kind == "sentinel":
            return f"sentinel service {self.service_name!r} db {self.db} via {hosts}"
        if self.kind == "cluster":
            return f"cluster seeded by {hosts}"
        return "standalone"


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL, raising :class:`ConfigError` with the accepted forms."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"redis_url must be one of {_URL_FORMS}; got {url!r}")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("standalone", tls=scheme == "rediss")
    base, plus, kind = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or kind not in ("sentinel", "cluster"):
        raise ConfigError(f"redis_url must be one of {_URL_FORMS}; got {mask_url(url)!r}")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = tuple(_host_port(item, default_port, url) for item in hostlist.split(","))
    segments = [segment for segment in path.split("/") if segment]
    if kind == "cluster":
        if segments and segments != ["0"]:
            raise ConfigError(
                f"a Redis Cluster has only database 0; remove {'/' + '/'.join(segments)!r} "
                f"from {mask_url(url)!r}"
            )
        return RedisTarget("cluster", hosts, "", 0, username, password, base == "rediss")
    if not segments or len(segments) > 2:
        raise ConfigError(
            f"a Sentinel URL names the service after the hosts, e.g. "
            f"redis+sentinel://host:26379/mymaster[/0]; got {mask_url(url)!r}"
        )
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(
                f"the database in {mask_url(url)!r} must be a number, got {segments[1]!r}"
            )
        db = int(segments[1])
    return RedisTarget(
        "sentinel", hosts, unquote(segments[0]), db, username, password, base == "rediss"
    )


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:6379
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"a host is missing in {mask_url(url)!r} (host:port[,host:port...])")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{port_text!r} in {mask_url(url)!r} is not a port number")
    return host, int(port_text)


def mask_url(url: str) -> str:
    """The URL with every password replaced by ``***``: in the user part (also with
    several hosts), and in the query (``?password=...``, which Redis clients accept too)."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_mark, fragment = query.partition("#")
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret(key) for key, _ in pairs):
            masked = [(key, "***" if _is_secret(key) else value) for key, value in pairs]
            query = urlencode(masked, safe="*")
        tail = f"{path}?{query}{hash_mark}{fragment}"
    return f"{scheme}://{netloc}{tail}"


def _is_secret(key: str) -> bool:
    key = key.lower()
    return "password" in key or key in ("pass", "passwd", "secret", "token")


# -- reading options from a settings object --------------------------------------
