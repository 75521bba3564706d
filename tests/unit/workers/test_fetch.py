"""Image URIs are refused unless ``limits.image_uris`` allows them, checked against a real HTTP
server on 127.0.0.1 and real files: every refusal has its test, and each says which key to change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from schemas.image_uris import ImageUrisConfig
from tests.fixtures.image_server import ImageServer, image_server, png_bytes  # noqa: F401 - fixture
from workers.base import InputError
from workers.fetch import FetchTimeout, ImageTooLarge, UnsupportedUri, UriNotAllowed, fetch_uri
from workers.images import ImageLimits, decode_image

CAP = 100_000


def allow(server: ImageServer, path: str = "/", **kw: object) -> ImageUrisConfig:
    return ImageUrisConfig(allowed_prefixes=(server.url(path),), **kw)


# -- http(s) -----------------------------------------------------------------------------------

def test_allowed_host_is_fetched_and_decoded(image_server: ImageServer) -> None:
    assert fetch_uri(image_server.url("/img.png"), allow(image_server), CAP) == png_bytes()
    limits = ImageLimits(uris=allow(image_server))
    assert decode_image({"uri": image_server.url("/img.png"), "data": None}, limits).size == (24, 16)


def test_nothing_is_allowed_by_default(image_server: ImageServer) -> None:
    with pytest.raises(UriNotAllowed, match=r"limits\.image_uris\.allowed_prefixes"):
        fetch_uri(image_server.url("/img.png"), ImageUrisConfig(), CAP)
    assert image_server.hits == []


@pytest.mark.parametrize("url_of", [
    lambda s: s.url("/img.png", host="localhost"),                # same server, another host name
    lambda s: f"http://127.0.0.1.evil.test:{s.port}/img.png",     # the allowed host as a string prefix
    lambda s: f"http://127.0.0.1:{s.port}@localhost:{s.port}/img.png",  # user info
    lambda s: f"http://127.0.0.1:{s.port + 1}/img.png",           # another port
])
def test_host_not_allowed(image_server: ImageServer, url_of) -> None:
    with pytest.raises(UriNotAllowed, match="allowed_prefixes|user info"):
        fetch_uri(url_of(image_server), allow(image_server), CAP)
    assert image_server.hits == []


def test_scheme_not_allowed(image_server: ImageServer) -> None:
    with pytest.raises(UriNotAllowed, match="allowed_prefixes"):  # https where only http is allowed
        fetch_uri(f"https://127.0.0.1:{image_server.port}/img.png", allow(image_server), CAP)
    for uri in ("s3://bucket/x.png", "ftp://127.0.0.1/x.png", "javascript:alert(1)", "data:image/png;base64,AAAA",
                "gopher://127.0.0.1:70/"):
        with pytest.raises(UnsupportedUri):
            fetch_uri(uri, allow(image_server), CAP)
    assert image_server.hits == []


@pytest.mark.parametrize("path", ["/public/../img.png", "/public/%2e%2e/img.png", "/publicity/img.png",
                                  "/public/..%2fimg.png"])
def test_path_outside_the_allowed_prefix(image_server: ImageServer, path: str) -> None:
    with pytest.raises(UriNotAllowed):
        fetch_uri(image_server.url(path), allow(image_server, "/public/"), CAP)
    assert image_server.hits == []


def test_redirect_to_a_disallowed_host_is_refused(image_server: ImageServer) -> None:
    out = image_server.url("/img.png", host="localhost")
    with pytest.raises(UriNotAllowed, match="localhost"):
        fetch_uri(image_server.url(f"/redirect?to={out}"), allow(image_server), CAP)
    assert image_server.hits == ["/redirect"]  # the target was never asked for


def test_redirects_are_followed_within_the_rules_and_bounded(image_server: ImageServer) -> None:
    inside = image_server.url("/redirect?to=/img.png")
    assert fetch_uri(inside, allow(image_server), CAP) == png_bytes()
    with pytest.raises(UriNotAllowed, match="max_redirects"):
        fetch_uri(image_server.url("/loop"), allow(image_server, max_redirects=2), CAP)
    assert image_server.hits.count("/loop") == 3
    with pytest.raises(UriNotAllowed, match="max_redirects"):
        fetch_uri(inside, allow(image_server, max_redirects=0), CAP)


def test_body_over_the_cap_is_refused_while_streaming(image_server: ImageServer) -> None:
    start = time.monotonic()
    with pytest.raises(ImageTooLarge, match="stopped reading"):
        fetch_uri(image_server.url("/big"), allow(image_server), CAP)
    assert time.monotonic() - start < 5
    # The server was cut off: it wrote what fits the cap plus socket buffers, not its 1 GiB.
    time.sleep(0.2)
    assert image_server.sent["big"] < 64 * 1024 * 1024


def test_declared_length_over_the_cap_is_refused_before_reading(image_server: ImageServer) -> None:
    with pytest.raises(ImageTooLarge, match="Content-Length"):
        fetch_uri(image_server.url("/big-declared"), allow(image_server), CAP)


def test_slow_server_times_out(image_server: ImageServer) -> None:
    start = time.monotonic()
    with pytest.raises(FetchTimeout, match="read_timeout|did not answer"):
        fetch_uri(image_server.url("/slow"), allow(image_server, read_timeout_s=0.5), CAP)
    assert time.monotonic() - start < 2


def test_dripping_server_hits_the_total_deadline(image_server: ImageServer) -> None:
    start = time.monotonic()
    with pytest.raises(FetchTimeout, match="total_timeout_s"):
        fetch_uri(image_server.url("/drip"), allow(image_server, read_timeout_s=2, total_timeout_s=0.6), CAP)
    assert time.monotonic() - start < 2


def test_unreachable_and_compressed_answers_are_item_errors(image_server: ImageServer) -> None:
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_uri(image_server.url("/nothing"), allow(image_server), CAP)
    with pytest.raises(InputError, match="compressed"):
        fetch_uri(image_server.url("/gzip"), allow(image_server), CAP)


# -- file:// ------------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "in.png").write_bytes(png_bytes())
    (outside / "secret.png").write_bytes(png_bytes())
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "linkdir").symlink_to(outside)
    (root / "big.png").write_bytes(b"\0" * (CAP + 1))
    os.mkfifo(root / "fifo.png")
    return {"root": root, "outside": outside}


def test_file_uri_under_the_root_is_read(files: dict[str, Path]) -> None:
    cfg = ImageUrisConfig(file_root=str(files["root"]))
    assert fetch_uri((files["root"] / "in.png").as_uri(), cfg, CAP) == png_bytes()
    assert fetch_uri(f"file://localhost{files['root'] / 'in.png'}", cfg, CAP) == png_bytes()


def test_file_uri_refused_when_no_root_is_configured(files: dict[str, Path]) -> None:
    with pytest.raises(UriNotAllowed, match=r"limits\.image_uris\.file_root is unset"):
        fetch_uri((files["root"] / "in.png").as_uri(), ImageUrisConfig(), CAP)


@pytest.mark.parametrize("uri_of", [
    lambda f: (f["outside"] / "secret.png").as_uri(),              # plainly outside
    lambda f: f"file://{f['root']}/../outside/secret.png",          # '..'
    lambda f: f"file://{f['root']}/%2e%2e/outside/secret.png",      # '..' percent-encoded
    lambda f: (f["root"] / "link.png").as_uri(),                    # a symlinked file leading out
    lambda f: (f["root"] / "linkdir" / "secret.png").as_uri(),      # a symlinked directory leading out
    lambda f: "file:///etc/passwd",
    lambda f: f"file://otherhost{f['root']}/in.png",                # a remote host
])
def test_file_uri_outside_the_root_is_refused(files: dict[str, Path], uri_of) -> None:
    with pytest.raises(UriNotAllowed, match="file_root|host"):
        fetch_uri(uri_of(files), ImageUrisConfig(file_root=str(files["root"])), CAP)


def test_file_uri_not_a_regular_file_or_too_big(files: dict[str, Path]) -> None:
    cfg = ImageUrisConfig(file_root=str(files["root"]))
    start = time.monotonic()
    with pytest.raises(UriNotAllowed, match="not a regular file"):  # a FIFO must not hang the replica
        fetch_uri((files["root"] / "fifo.png").as_uri(), cfg, CAP)
    assert time.monotonic() - start < 1
    with pytest.raises(UriNotAllowed, match="not a regular file"):
        fetch_uri(files["root"].as_uri(), cfg, CAP)
    with pytest.raises(ImageTooLarge, match="over the limit"):
        fetch_uri((files["root"] / "big.png").as_uri(), cfg, CAP)
    with pytest.raises(InputError, match="cannot read"):
        fetch_uri((files["root"] / "missing.png").as_uri(), cfg, CAP)


# -- config ---------------------------------------------------------------------------------------

def test_limits_from_options_carry_the_uri_config() -> None:
    opts = {"max_image_bytes": 10, "max_image_pixels": 5,
            "image_uris": {"file_root": "/srv/images", "allowed_prefixes": ["https://a.example/"]}}
    lim = ImageLimits.from_options(opts)
    assert (lim.max_bytes, lim.max_pixels, lim.uris.file_root) == (10, 5, "/srv/images")
    assert lim.uris.allowed_prefixes == ("https://a.example/",) and lim.uri_prefixes is None
    legacy = ImageLimits.from_options({"allowed_uri_prefixes": ["https://b.example/x/"], "fetch_timeout_s": 2})
    assert legacy.uri_prefixes == ("https://b.example/x/",) and legacy.uris.read_timeout_s == 2


def test_a_models_own_prefixes_replace_the_shared_ones(image_server: ImageServer) -> None:
    limits = ImageLimits(uris=ImageUrisConfig(), uri_prefixes=(image_server.url("/"),))
    assert decode_image({"uri": image_server.url("/img.png"), "data": None}, limits).size == (24, 16)
