"""`OneWriteHttp`: uvicorn's httptools protocol, each response sent to the socket in one
write instead of two.

uvicorn writes a response's status line and headers, then its body, each straight to the
socket: two `send` calls, and on a keep-alive connection two wake-ups of the client, which
reads the headers alone and waits again for the body. Held until the response is complete,
they go out as one. Under `benchmarks/load_test.py --history 50` (32 clients, 2 workers)
writing answers to the socket was a fifth of a worker's wall time (py-spy), little of it
the kernel's own work (system CPU is about 5% of a request's) and most of it the worker
preempted by the client its write woke on the shared cores; the measured effect is in that
script's docstring. Writes that no completed response follows (a streamed body, a 100 Continue)
go out at the end of the loop's current turn, so nothing is held longer than that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeldWrites:
    """A transport whose writes are held until `flush`: at the end of a response, before
    the connection closes, or at the latest at the end of the loop's current turn."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        if not self._held:
            return
        data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
        self._held.clear()
        if not self._transport.is_closing():  # the client is gone: no one to send it to
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()  # a protocol upgrade takes the connection over from here
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttp(HttpToolsProtocol):
    """The protocol for `uvicorn.run(..., http=OneWriteHttp)`; see the module's docstring."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control and addresses: the socket's own
        self.transport = HeldWrites(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
