"""A response body decoded as it arrives, never larger than one bound after decoding.

Both transports (worker.llm.http for deployments reached directly, aiohttp for those behind a
proxy) feed the bytes of a body here as they come off the wire, still content-coded. Decoding is
streamed with an output limit: a gzip bomb stops at the bound, having inflated no more than the
bound, in the event loop's callback that received those bytes. Only the codings we ask for with
ACCEPT_ENCODING (and deflate, which costs nothing more) are accepted; anything else (`br`,
`zstd`, ...) fails at once, before its body is read.

Gzip is read as the openai SDK's HTTP client reads it: one member, bytes after its end ignored;
a gzip or deflate stream that ends early is an error, never a shorter answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from worker.llm.errors import UnusableAnswer

MAX_BODY = 32 * 1024 * 1024  # bytes of a body after decoding (and of its coded bytes)
ACCEPT_ENCODING = "gzip, identity"
SLICE = 256 * 1024  # bytes inflated at a time


class _Inflate:
    """One zlib stream (gzip, zlib-wrapped or raw deflate), inflated a slice at a time."""

    __slots__ = ("_name", "_stream", "_raw_fallback", "_seen", "_started")

    def __init__(self, name: str, wbits: int, raw_fallback: bool = False) -> None:
        self._name = name
        self._stream = zlib.decompressobj(wbits)
        # deflate: zlib-wrapped as the RFC says, or raw as some servers send it; zlib tells
        # them apart by the first two bytes, kept here until then.
        self._raw_fallback = raw_fallback
        self._seen = b""
        self._started = False

    def slices(self, data: bytes) -> Iterator[bytes]:
        """The output for `data`, at most SLICE bytes at a time: the caller stops asking once
        its bound is reached, so no more than that is ever inflated."""
        while data:
            try:
                out = self._stream.decompress(data, SLICE)
            except zlib.error as exc:
                if not self._raw_fallback:
                    raise UnusableAnswer(f"undecodable {self._name} body ({exc})") from None
                # Not zlib-wrapped: raw deflate, read so from its first byte.
                data, self._seen, self._raw_fallback = self._seen + data, b"", False
                self._stream = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._started = True
            if self._raw_fallback:
                self._seen += data[:2]
                if len(self._seen) >= 2:  # the zlib header was read: zlib-wrapped it is
                    self._raw_fallback, self._seen = False, b""
            data = self._stream.unconsumed_tail
            if out:
                yield out

    def finish(self) -> None:
        if self._started and not self._stream.eof:
            raise UnusableAnswer(f"truncated {self._name} body")


def _gzip(name: str) -> _Inflate:
    return _Inflate(name, 16 + zlib.MAX_WBITS)


def _deflate(name: str) -> _Inflate:
    return _Inflate(name, zlib.MAX_WBITS, raw_fallback=True)


_DECODERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate}


def _too_large() -> UnusableAnswer:
    return UnusableAnswer(f"response body larger than {MAX_BODY} bytes")


class BoundedBody:
    """The decoded body of one response: `feed` the coded bytes, then `finish` for the body.

    `content_encoding` is the response's Content-Encoding header ("" when none); a coding not
    listed in _DECODERS raises UnusableAnswer here, before any byte of the body is read.
    """

    __slots__ = ("_decoders", "_data", "_coded")

    def __init__(self, content_encoding: str = "") -> None:
        # The decoded body: its first piece as it came (most answers arrive in one, and are
        # then never copied), a bytearray once a second one comes (never a list of pieces,
        # which a peer sending one-byte chunks would make many times the body's size).
        self._data: bytes | bytearray = b""
        self._coded = 0
        self._decoders: list[_Inflate] = []
        if content_encoding:
            # Codings are listed in the order they were applied: undo them from the last.
            for coding in reversed(content_encoding.lower().split(",")):
                coding = coding.strip()
                if not coding or coding == "identity":
                    continue
                factory = _DECODERS.get(coding)
                if factory is None:
                    raise UnusableAnswer(
                        f"unsupported Content-Encoding {coding[:40]!r} "
                        f"(the request accepted {ACCEPT_ENCODING})"
                    )
                self._decoders.append(factory(coding))

    def feed(self, data: bytes) -> None:
        if not self._decoders:
            self._add(data)
            return
        self._coded += len(data)
        if self._coded > MAX_BODY:
            raise _too_large()
        self._decode(0, data)

    def _decode(self, index: int, data: bytes) -> None:
        """Through decoders[index:], slice by slice, into the body (or UnusableAnswer)."""
        last = index == len(self._decoders) - 1
        for out in self._decoders[index].slices(data):
            if last:
                self._add(out)
            else:
                self._decode(index + 1, out)

    def _add(self, piece: bytes) -> None:
        data = self._data
        if len(data) + len(piece) > MAX_BODY:
            raise _too_large()
        if not data:
            self._data = piece
        elif isinstance(data, bytearray):
            data += piece
        else:  # the second piece: one bytearray from here on
            grown = bytearray(data)
            grown += piece
            self._data = grown

    def finish(self) -> bytes:
        for decoder in self._decoders:
            decoder.finish()
        data = self._data
        return data if isinstance(data, bytes) else bytes(data)
