"""Files in and out of the web server: request bodies streamed to disk, files streamed back.

JSON bodies are small and held in memory. An endpoint that takes a file (a media upload) is a
StreamedBodyEndpoint: its own size limit is enforced while the body arrives (413 as soon as Content-Length
or the bytes received pass it), and the body goes to a sink (a temporary file) as it arrives, never whole
in memory. Such a body may take longer than read_timeout, but not by trickling: every PROGRESS_BYTES that
arrive buy another read_timeout.

A file answer (FileResponse) is sent with a pull producer, a chunk each time the socket drains, so a large
file is never read into memory; a client that stops reading for the idle timeout is cut off.

Each streamed body and each file being sent holds a descriptor for as long as the client takes, so they
are counted (OpenFiles) against a share of the descriptors admission control keeps in reserve; beyond it,
new ones are refused at once with 503 and Retry-After, like any other work beyond the budget.
"""

from typing import Any, Protocol
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.protocols.basic import FileSender

from homeserver.http.responses import FileResponse
from homeserver.http.routing import Endpoint

PROGRESS_BYTES = 64 * 1024


class BodySink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Release it; what the endpoint did not keep is discarded."""


class OpenFiles:
    """A count of the files held open for clients, with a cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use -= 1


class StreamedBodyEndpoint(Endpoint):
    """An endpoint whose body is streamed into a sink (see the module doc). The endpoint takes the sink
    with `request.raw.take_body_sink()` and closes it; one it did not take is closed with the request."""

    max_body_size: int

    def open_body(self) -> BodySink | None:
        """A new sink, or None when no file may be opened now (the request is refused with 503)."""
        raise NotImplementedError


def has_access_token(authorization: list[bytes] | None, uri: bytes) -> bool:
    """Whether a request presents a token at all, judged from its head alone."""
    if authorization:
        return True
    _, _, query = uri.partition(b"?")
    return bool(query) and bool(parse_qs(query).get(b"access_token"))


class FileTransfer:
    """Sends a FileResponse's file to a request, then finishes the request (the consumer FileSender sees
    is this object, so each chunk the client accepts re-arms the stall timer)."""

    def __init__(self, raw: Any, response: FileResponse, reactor: Any, stall_timeout: float) -> None:
        self._raw = raw
        self._response = response
        self._stall_timeout = stall_timeout
        self._timer = reactor.callLater(stall_timeout, self._stalled)

    def start(self) -> defer.Deferred:
        return FileSender().beginFileTransfer(self._response.file, self).addBoth(self._done)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._raw.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._raw.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._raw.write(data)
        if self._timer.active():
            self._timer.reset(self._stall_timeout)

    def _stalled(self) -> None:
        channel = self._raw.channel
        if channel is not None:
            channel.transport.abortConnection()  # the producer is stopped, which ends the transfer

    def _done(self, result: Any) -> None:
        if self._timer.active():
            self._timer.cancel()
        self._response.close()
        if not self._raw._disconnected and not self._raw.finished:
            self._raw.finish()
