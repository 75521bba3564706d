"""Fetching an image by URI under ``limits.image_uris``: a local file under one directory, or
http(s) from allowed prefixes, with every redirect checked again, a byte cap and time limits.

What is refused, and how (each raises an ``InputError`` subclass, so only that item fails):

- ``file://`` when ``file_root`` is unset, or when the path resolves (``..`` and symlinks
  followed, checked again on the opened descriptor) outside it, or is not a regular file.
- ``http(s)://`` whose scheme, host, port or path matches no ``allowed_prefixes`` entry,
  URLs with user info, and redirects to such URLs (or more than ``max_redirects``).
- Bodies over the byte cap: a larger ``Content-Length`` is refused before reading, and the
  body is read in small pieces and dropped once past the cap (never read whole).
- Slow servers: connect and per-read timeouts, and a deadline for the whole fetch.
- Any other scheme (``s3://`` included) as unsupported.
"""

from __future__ import annotations

import os
import stat
import time
import urllib.parse
from pathlib import Path

import urllib3

from schemas.image_uris import KEY, ImageUrisConfig, parse_prefix, url_parts
from workers.base import InputError

__all__ = ["FetchTimeout", "ImageTooLarge", "UnsupportedUri", "UriNotAllowed", "fetch_uri"]

_CHUNK = 64 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}
# No retries and no automatic redirects: every hop is checked here first.
_POOL = urllib3.PoolManager(num_pools=16, maxsize=4, retries=False, block=False)


class ImageTooLarge(InputError):
    """The image is over the byte or pixel limit (a decompression bomb, or just too big)."""


class UriNotAllowed(InputError):
    """The URI points somewhere ``limits.image_uris`` does not allow; the message says which key to change."""


class UnsupportedUri(InputError):
    """The URI scheme is not supported here (e.g. ``s3://``)."""


class FetchTimeout(InputError):
    """The image server was too slow (connect, a read, or the whole fetch)."""


def _short(uri: str) -> str:
    return repr(uri[:200])


def fetch_uri(uri: str, cfg: ImageUrisConfig, max_bytes: int,
              prefixes: list[str] | None = None) -> bytes:
    """The bytes behind ``uri``, or an ``InputError`` saying why not.

    Args:
        uri: ``file://``, ``http://`` or ``https://``.
        cfg: where URIs may point, and the time limits.
        max_bytes: the byte cap of the body or file.
        prefixes: http(s) prefixes to use instead of ``cfg.allowed_prefixes`` (a model's own).
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme == "file":
        return read_file_uri(uri, cfg, max_bytes)
    if scheme in ("http", "https"):
        return fetch_http(uri, cfg, max_bytes, cfg.allowed_prefixes if prefixes is None else tuple(prefixes))
    if scheme == "s3":
        raise UnsupportedUri("s3:// image URIs are not supported; send the image inline (image.data) "
                             f"or by http(s) from a host in {KEY}.allowed_prefixes")
    raise UnsupportedUri(f"unsupported image uri scheme {scheme!r} in {_short(uri)}; "
                         "use inline image.data, file:// or http(s)://")


# -- file:// ---------------------------------------------------------------------------------

def read_file_uri(uri: str, cfg: ImageUrisConfig, max_bytes: int) -> bytes:
    """A regular file under ``cfg.file_root`` named by a ``file://`` URI."""
    if cfg.file_root is None:
        raise UriNotAllowed(f"file:// image URIs are off ({KEY}.file_root is unset); set {KEY}.file_root: "
                            "/path/to/images to read files under that directory, or send the image inline")
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise UriNotAllowed(f"file URI {_short(uri)} names host {parts.netloc!r}; only local files "
                            "(file:///path) are read")
    root = Path(cfg.file_root).resolve()
    raw = urllib.parse.unquote(parts.path)
    if "\x00" in raw:
        raise UriNotAllowed(f"file URI {_short(uri)} has a NUL in its path")
    path = Path(raw).resolve()  # follows symlinks and '..': what would really be opened
    outside = UriNotAllowed(f"file URI {_short(uri)} resolves outside {KEY}.file_root ({root}); "
                            "move the file under it, or widen file_root")
    if not path.is_relative_to(root):
        raise outside
    try:
        # O_NONBLOCK: a FIFO must not hang the replica; O_NOFOLLOW: the last part was resolved above.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"cannot read image file {path}: {exc.strerror}") from None
    try:
        # What was opened, not what was checked: a directory swapped for a symlink in between is caught.
        opened = Path(f"/proc/self/fd/{fd}")
        if opened.exists() and not opened.resolve().is_relative_to(root):
            raise outside
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UriNotAllowed(f"file URI {_short(uri)} is not a regular file")
        if st.st_size > max_bytes:
            raise ImageTooLarge(f"image file is {st.st_size} bytes, over the limit of {max_bytes}")
        with os.fdopen(os.dup(fd), "rb") as f:
            body = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(body) > max_bytes:
        raise ImageTooLarge(f"image file grew past the limit of {max_bytes} bytes while read")
    return body


# -- http(s):// ------------------------------------------------------------------------------

def check_url(url: str, prefixes: tuple[str, ...]) -> None:
    """Refuse ``url`` unless its parsed scheme, host, port and path match one of ``prefixes``."""
    try:
        parts = url_parts(url)
    except ValueError as err:
        raise UriNotAllowed(f"image uri refused: {err}") from None
    if not any(parse_prefix(p).matches(parts) for p in prefixes):
        where = f"{parts.scheme}://{parts.host}:{parts.port}{parts.path}"
        raise UriNotAllowed(
            f"image uri {_short(url)} ({where}) is not under any of {KEY}.allowed_prefixes {list(prefixes)}; "
            f"add its host, e.g. '{parts.scheme}://{parts.host}/', if it is trusted")


def fetch_http(url: str, cfg: ImageUrisConfig, max_bytes: int, prefixes: tuple[str, ...]) -> bytes:
    """GET ``url`` (and allowed redirects) with a byte cap, per-read timeouts and an overall deadline."""
    deadline = time.monotonic() + cfg.total_timeout_s
    for _hop in range(cfg.max_redirects + 1):
        check_url(url, prefixes)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        timeout = urllib3.Timeout(connect=min(cfg.connect_timeout_s, left), read=min(cfg.read_timeout_s, left))
        try:
            resp = _POOL.request("GET", url, preload_content=False, redirect=False, retries=False,
                                 timeout=timeout, decode_content=False,
                                 headers={"User-Agent": "infertide", "Accept": "image/*",
                                          "Accept-Encoding": "identity"})
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError):
            raise FetchTimeout(f"image server for {_short(url)} did not answer in time (connect "
                               f"{cfg.connect_timeout_s}s / read {cfg.read_timeout_s}s, {KEY})") from None
        except urllib3.exceptions.HTTPError as exc:
            raise InputError(f"cannot fetch image {_short(url)}: {type(exc).__name__}: {exc}") from None
        try:
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise InputError(f"image server answered {resp.status} without a Location for {_short(url)}")
                url = urllib.parse.urljoin(url, location)
                continue
            if resp.status != 200:
                raise InputError(f"image server answered HTTP {resp.status} for {_short(url)}")
            if resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
                raise InputError(f"image server sent a compressed body ({resp.headers['Content-Encoding']}) "
                                 f"for {_short(url)}; only identity encoding is read")
            return _read_capped(resp, url, max_bytes, deadline, cfg)
        finally:
            resp.close()  # never drain: an unread remainder may be huge or never end
            resp.release_conn()
    if time.monotonic() >= deadline:
        raise FetchTimeout(f"fetching {_short(url)} took over {KEY}.total_timeout_s ({cfg.total_timeout_s}s)")
    raise UriNotAllowed(f"image uri {_short(url)} redirected more than {KEY}.max_redirects ({cfg.max_redirects}) "
                        "times; link the final location")


def _read_capped(resp: urllib3.BaseHTTPResponse, url: str, max_bytes: int, deadline: float,
                 cfg: ImageUrisConfig) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ImageTooLarge(f"image at {_short(url)} is {declared} bytes (Content-Length), "
                            f"over the limit of {max_bytes}")
    body = bytearray()
    try:
        while chunk := resp.read1(_CHUNK):  # one socket read at a time, so the deadline is checked often
            body += chunk
            if len(body) > max_bytes:
                raise ImageTooLarge(f"image at {_short(url)} is over the limit of {max_bytes} bytes "
                                    f"(stopped reading at {len(body)})")
            if time.monotonic() > deadline:
                raise FetchTimeout(f"image at {_short(url)} took over {KEY}.total_timeout_s "
                                   f"({cfg.total_timeout_s}s); got {len(body)} bytes by then")
    except urllib3.exceptions.ReadTimeoutError:
        raise FetchTimeout(f"image server for {_short(url)} stalled for over {KEY}.read_timeout_s "
                           f"({cfg.read_timeout_s}s) mid-body") from None
    except urllib3.exceptions.HTTPError as exc:
        raise InputError(f"cannot fetch image {_short(url)}: {type(exc).__name__}: {exc}") from None
    return bytes(body)
