"""Where an image URI may point: the ``limits.image_uris`` config and the pure URL checks.

Off by default: ``file://`` needs ``file_root`` (a directory; only files under it are read)
and ``http(s)://`` needs an entry in ``allowed_prefixes``. A URL is compared with a prefix
by its parsed parts (scheme, host, port, then the normalised path on a segment boundary),
never as a string, so ``https://images.example.com.evil.net/`` or
``https://images.example.com@evil.net/`` do not pass for ``https://images.example.com/``.
The fetching itself (and the same check on every redirect) is ``workers/fetch.py``.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from pathlib import PurePosixPath
from typing import Annotated, NamedTuple

from pydantic import Field, field_validator

from schemas.config_base import PositiveFloat, Strict

__all__ = ["KEY", "ImageUrisConfig", "UrlPrefix", "parse_prefix", "url_parts"]

#: Where the config lives in the topology, for error messages.
KEY = "limits.image_uris"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UrlPrefix(NamedTuple):
    """One allowed http(s) location: scheme, lower-case host, port and a path prefix."""

    scheme: str
    host: str
    port: int
    path: str

    def matches(self, url: UrlPrefix) -> bool:
        """``url`` (from :func:`url_parts`) is at or under this prefix."""
        if url[:3] != self[:3]:
            return False
        base = self.path.rstrip("/")
        return not base or url.path == base or url.path.startswith(base + "/")


def url_parts(url: str) -> UrlPrefix:
    """A URL's scheme, host, port and normalised path (``..`` and ``.`` resolved, ``%2e`` decoded).

    Raises:
        ValueError: not an absolute http(s) URL with a host, or it carries user info.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"cannot parse {url[:200]!r}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url[:200]!r} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"{url[:200]!r} has no host")
    if "@" in parts.netloc:
        raise ValueError(f"{url[:200]!r} carries user info ('user@host'); name the host alone")
    path = urllib.parse.unquote(parts.path) or "/"
    if "\\" in path or "\x00" in path:
        raise ValueError(f"{url[:200]!r} has a backslash or NUL in its path")
    # Leading '//' survives normpath; collapse it so '/a/..//b' cannot look like another prefix.
    path = "/" + posixpath.normpath(path).lstrip("/")
    return UrlPrefix(scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme], path)


def parse_prefix(prefix: str) -> UrlPrefix:
    """One ``allowed_prefixes`` entry, checked; the error says what to write instead."""
    if prefix.lower().startswith("file:"):
        raise ValueError(f"{prefix!r}: file URIs are allowed by directory, not by prefix; "
                         f"set {KEY}.file_root: /path/to/images instead")
    try:
        return url_parts(prefix)
    except ValueError as err:
        raise ValueError(f"{err}; write an http(s) prefix such as 'https://images.example.com/'") from None


class ImageUrisConfig(Strict):
    """Where ``image.uri`` may point, and how long and how much a fetch may take.

    Args:
        file_root: ``file://`` URIs are read only when they resolve (symlinks and ``..``
            followed) to a regular file under this absolute directory; unset refuses them all.
        allowed_prefixes: ``http(s)://host[:port][/path]`` entries; a URL must match one by
            scheme, host, port and path prefix. Empty refuses http(s). Redirects are checked again.
        connect_timeout_s: TCP/TLS connect timeout of one request.
        read_timeout_s: the longest wait for the next bytes of an answer.
        total_timeout_s: the whole fetch, redirects and body included.
        max_redirects: redirects followed (each checked against the same rules); 0 refuses them.
    """

    file_root: str | None = None
    allowed_prefixes: tuple[str, ...] = ()
    connect_timeout_s: PositiveFloat = 3.0
    read_timeout_s: PositiveFloat = 5.0
    total_timeout_s: PositiveFloat = 10.0
    max_redirects: Annotated[int, Field(ge=0, le=10)] = 3

    @field_validator("file_root")
    @classmethod
    def _absolute_root(cls, v: str | None) -> str | None:
        if v is not None and not PurePosixPath(v).is_absolute():
            raise ValueError("file_root must be an absolute directory, e.g. /srv/images")
        return v

    @field_validator("allowed_prefixes")
    @classmethod
    def _prefixes_parse(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in v:
            parse_prefix(prefix)
        return v

    def prefixes(self) -> list[UrlPrefix]:
        return [parse_prefix(p) for p in self.allowed_prefixes]
