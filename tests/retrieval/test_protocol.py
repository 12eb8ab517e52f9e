"""`OneWriteHttp`: each response reaches the socket in one write (uvicorn's own protocol
makes two), and what is written is what uvicorn's protocol writes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from embedrec.retrieval.api import create_app
from embedrec.retrieval.api.protocol import OneWriteHttp


class Socket(asyncio.Transport):
    """A transport that records each write, as the socket would see each `send`."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def request(body: dict[str, Any], *, close: bool = False) -> bytes:
    data = orjson.dumps(body)
    head = b"POST /recommend HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    head += b"Connection: close\r\n" if close else b""
    return head + b"Content-Length: %d\r\n\r\n%s" % (len(data), data)


async def exchange(app: Any, protocol: type[HttpToolsProtocol], raw: bytes) -> Socket:
    config = Config(app, http=protocol, lifespan="off", log_level="warning")
    config.load()
    server = protocol(config=config, server_state=ServerState(), app_state={})
    socket = Socket()
    server.connection_made(socket)
    server.data_received(raw)
    deadline = time.monotonic() + 60
    while not (socket.writes and server.cycle.response_complete):
        assert time.monotonic() < deadline, "no answer in 60 s"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # a turn of the loop, for anything still held
    return socket


@pytest.fixture(scope="module")
def app(rec):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EMBEDREC_API_KEY", raising=False)
        return create_app(rec)


def split(raw: bytes) -> tuple[list[bytes], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"date:")]
    return headers, orjson.loads(body)


@pytest.mark.parametrize("close", [False, True])
def test_a_response_is_one_write_with_what_uvicorn_writes_in_two(app, close):
    raw = request({"history": ["1", "2", "nope"], "k": 3}, close=close)
    ours = asyncio.run(exchange(app, OneWriteHttp, raw))
    theirs = asyncio.run(exchange(app, HttpToolsProtocol, raw))
    assert len(theirs.writes) == 2  # headers, then the body: why OneWriteHttp exists
    assert len(ours.writes) == 1
    assert ours.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert split(ours.writes[0]) == split(b"".join(theirs.writes))
    assert split(ours.writes[0])[1]["unknown_history"] == 1
    assert ours.closed == theirs.closed == close


def test_an_error_answer_is_one_write_too(app):
    ours = asyncio.run(exchange(app, OneWriteHttp, request({"user_id": "1", "k": 0})))
    assert len(ours.writes) == 1 and ours.writes[0].startswith(b"HTTP/1.1 422 ")
