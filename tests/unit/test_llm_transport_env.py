"""What the gateway's transport reads from the environment (TLS trust, proxies, netrc) and how it
decodes bodies, without sockets. The TLS variables and their order are Rasa Pro's
(rasa/shared/providers/_ssl_verification_utils.py in 3.11.20: `_get_ssl_verify`, `_get_ssl_cert`;
the same file through 3.21.0)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest
from yarl import URL

from worker.llm.body import MAX_BODY, BoundedBody
from worker.llm.errors import UnusableAnswer
from worker.llm.netrc_auth import BasicCredentials, NetrcCredentials
from worker.llm.proxies import environment_proxies, proxy_for
from worker.llm.tls import TlsTrust

# ---- TLS trust: Rasa 3.11.20, rasa/shared/providers/_ssl_verification_utils.py ---------------


@pytest.mark.parametrize(
    ("environ", "ca_bundle"),
    [
        ({}, None),
        ({"SSL_VERIFY": "/c"}, ("SSL_VERIFY", "/c")),
        ({"REQUESTS_CA_BUNDLE": "/b", "SSL_VERIFY": "/c"}, ("REQUESTS_CA_BUNDLE", "/b")),
        ({"RASA_CA_BUNDLE": "/a", "REQUESTS_CA_BUNDLE": "/b"}, ("RASA_CA_BUNDLE", "/a")),
        ({"RASA_CA_BUNDLE": "", "SSL_VERIFY": "/c"}, ("SSL_VERIFY", "/c")),  # empty is unset
        ({"ssl_verify": "/c"}, None),  # names are case-sensitive, as os.environ.get reads them
    ],
)
def test_the_ca_bundle_is_the_first_set_of_rasas_three_variables(
    environ: dict[str, str], ca_bundle: tuple[str, str] | None
) -> None:
    assert TlsTrust.from_environment(environ).ca_bundle == ca_bundle


@pytest.mark.parametrize(
    ("environ", "certificate"),
    [
        ({}, None),
        ({"SSL_CERTIFICATE": "/s"}, ("SSL_CERTIFICATE", "/s")),
        ({"RASA_SSL_CERTIFICATE": "/r", "SSL_CERTIFICATE": "/s"}, ("RASA_SSL_CERTIFICATE", "/r")),
        ({"RASA_SSL_CERTIFICATE": "", "SSL_CERTIFICATE": "/s"}, ("SSL_CERTIFICATE", "/s")),
    ],
)
def test_the_client_certificate_is_the_first_set_of_rasas_two_variables(
    environ: dict[str, str], certificate: tuple[str, str] | None
) -> None:
    assert TlsTrust.from_environment(environ).client_certificate == certificate


def test_without_variables_the_trust_is_the_default() -> None:
    assert TlsTrust.from_environment({}).is_default
    assert not TlsTrust.from_environment({"SSL_CERTIFICATE": "/s"}).is_default


# ---- proxies ------------------------------------------------------------------------------------


def test_proxy_variables_follow_urllibs_precedence() -> None:
    found = environment_proxies(
        {
            "HTTPS_PROXY": "upper:1",
            "https_proxy": "lower:2",  # lower case wins
            "HTTP_PROXY": "upper:3",
            "http_proxy": "",  # an empty lower-case variable unsets it
            "ALL_PROXY": "all:4",
            "NO_PROXY": "internal",
            "PATH": "/bin",
        }
    )
    assert found == {
        "https": ("https_proxy", "lower:2"),
        "all": ("ALL_PROXY", "all:4"),
        "no": ("NO_PROXY", "internal"),
    }


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://api.example/v1", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
        ("https://api.example/v1", {"HTTPS_PROXY": "https://proxy:443"}, "https://proxy"),
        ("http://api.example/v1", {"HTTPS_PROXY": "proxy:3128"}, None),
        ("http://api.example/v1", {"ALL_PROXY": "proxy:8080"}, "http://proxy:8080"),
        ("https://api.example/v1", {"ALL_PROXY": "a:1", "HTTPS_PROXY": "b:2"}, "http://b:2"),
        ("https://api.example/v1", {"ALL_PROXY": "a:1", "NO_PROXY": "example"}, None),
        ("https://api.example/v1", {"ALL_PROXY": "a:1", "NO_PROXY": "*"}, None),
        ("https://api.example/v1", {"ALL_PROXY": "a:1", "NO_PROXY": "other.example"}, "http://a:1"),
    ],
)
def test_the_proxy_of_a_url(url: str, environ: dict[str, str], expected: str | None) -> None:
    proxy = proxy_for(URL(url), environ)
    assert (str(proxy.url) if proxy else None) == expected


def test_proxy_credentials_are_kept_apart_from_its_url() -> None:
    proxy = proxy_for(URL("https://api.example/"), {"HTTPS_PROXY": "u:p%40ss@proxy:3128"})
    assert proxy is not None
    assert str(proxy.url) == "http://proxy:3128"
    assert proxy.auth == BasicCredentials("u", "p@ss")
    assert "p@ss" not in repr(proxy) and "p@ss" not in str(proxy)


@pytest.mark.parametrize("value", ["socks5://proxy:1080", "socks4a://proxy", "ftp://proxy"])
def test_unsupported_proxy_schemes_are_refused_by_variable(value: str) -> None:
    with pytest.raises(ValueError, match=r"ALL_PROXY: \w+:// proxies are not supported"):
        proxy_for(URL("https://api.example/"), {"ALL_PROXY": value})


# ---- netrc -----------------------------------------------------------------------------------


def test_netrc_gives_exact_machine_entries_and_never_the_default(tmp_path: Path) -> None:
    path = tmp_path / "netrc"
    path.write_text(
        "machine LLM.internal login router password s3cret\n"
        "machine default login named-default password not-a-host\n"
        "default login anyone password everywhere\n"
    )
    credentials = NetrcCredentials.from_environment({"NETRC": str(path)})
    assert credentials.for_host("llm.internal") == BasicCredentials("router", "s3cret")
    assert credentials.for_host("other.internal") is None
    assert credentials.for_host("default") is None
    assert credentials.for_host(None) is None
    assert "s3cret" not in repr(credentials) and "s3cret" not in repr(
        BasicCredentials("a", "s3cret")
    )


def test_netrc_is_home_dot_netrc_without_netrc_variable(tmp_path: Path) -> None:
    (tmp_path / ".netrc").write_text("machine h login l password p\n")
    assert NetrcCredentials.from_environment({"HOME": str(tmp_path)}).for_host("h") is not None
    assert (
        NetrcCredentials.from_environment({"NETRC": str(tmp_path / "none")}).for_host("h") is None
    )


def test_basic_credentials_header() -> None:
    assert (
        BasicCredentials("router", "s3cret-netrc").header() == "Basic cm91dGVyOnMzY3JldC1uZXRyYw=="
    )
    assert BasicCredentials("ü", "€").header() == "Basic w7w64oKs"  # beyond Latin-1: UTF-8


# ---- bounded bodies -----------------------------------------------------------------------------


def fed(body: BoundedBody, data: bytes, piece: int) -> bytes:
    for start in range(0, len(data), piece):
        body.feed(data[start : start + piece])
    return body.finish()


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_gzip_and_deflate_are_decoded_as_they_arrive(piece: int) -> None:
    text = b'{"choices":[{"message":{"content":"A"}}]}' * 50
    assert fed(BoundedBody("gzip"), gzip.compress(text), piece) == text
    assert fed(BoundedBody("x-gzip"), gzip.compress(text), piece) == text
    assert fed(BoundedBody("deflate"), zlib.compress(text), piece) == text
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert fed(BoundedBody("deflate"), raw.compress(text) + raw.flush(), piece) == text  # raw
    assert fed(BoundedBody("gzip, gzip"), gzip.compress(gzip.compress(text)), piece) == text
    assert fed(BoundedBody("identity"), text, piece) == text
    assert fed(BoundedBody(""), text, piece) == text


def test_gzip_is_one_member_and_the_rest_ignored_as_httpx_does() -> None:
    assert fed(BoundedBody("gzip"), gzip.compress(b"one") + gzip.compress(b"two"), 3) == b"one"


def test_a_stream_that_ends_early_or_is_not_the_coding_is_refused() -> None:
    coded = gzip.compress(b"x" * 10_000)
    with pytest.raises(UnusableAnswer, match="truncated gzip"):
        fed(BoundedBody("gzip"), coded[: len(coded) // 2], 100)
    with pytest.raises(UnusableAnswer, match="undecodable gzip"):
        fed(BoundedBody("gzip"), b"not gzip at all", 100)
    assert BoundedBody("gzip").finish() == b""  # an empty body (a 204, a HEAD) is no stream


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br", "Br"])
def test_codings_not_asked_for_are_refused_before_any_byte(coding: str) -> None:
    with pytest.raises(UnusableAnswer, match="unsupported Content-Encoding"):
        BoundedBody(coding)


def test_the_bound_is_after_decoding() -> None:
    exactly = BoundedBody()
    exactly.feed(bytes(MAX_BODY))
    assert len(exactly.finish()) == MAX_BODY
    with pytest.raises(UnusableAnswer, match="larger than"):
        BoundedBody().feed(bytes(MAX_BODY + 1))
    bomb = gzip.compress(bytes(MAX_BODY + 1))
    assert len(bomb) < MAX_BODY // 100
    with pytest.raises(UnusableAnswer, match="larger than"):
        fed(BoundedBody("gzip"), bomb, 64 * 1024)
