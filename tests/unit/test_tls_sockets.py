"""The Web API's TLS listener (`transports/tls_sockets.py`) as an asyncio transport: bytes
both ways in order under back-pressure, flow control, the peer's end, a clean close
(TLS close_notify), and connections whose handshake fails or never finishes."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from crdtmds.tls import make_self_signed, server_ssl_context
from crdtmds.transports.tls_sockets import TlsServer

WAIT = 10.0


class Echo(asyncio.Protocol):
    """Sends back what it receives, and stops reading while its replies back up."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.write_pauses = 0
        self.eof = False
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        assert self.transport is not None
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.write_pauses += 1
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class Farewell(asyncio.Protocol):
    """Writes one line and closes at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"bye\n")
        transport.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, ["127.0.0.1"])
    return cert, key


async def serve(
    tls_files: tuple[Path, Path], factory, *, handshake_timeout: float = WAIT
) -> tuple[TlsServer, int, list[asyncio.Protocol]]:
    made: list[asyncio.Protocol] = []

    def counted() -> asyncio.Protocol:
        made.append(factory())
        return made[-1]

    context = server_ssl_context(*map(str, tls_files))
    assert context is not None
    server = TlsServer(counted, context, handshake_timeout=handshake_timeout)
    await server.bind("127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], made


def client_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files[0]))


async def test_bytes_come_back_whole_and_in_order_under_back_pressure(
    tls_files: tuple[Path, Path],
) -> None:
    server, port, made = await serve(tls_files, Echo)
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than the sockets buffer
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(tls_files)
        )

        async def read_back() -> bytes:
            await asyncio.sleep(0.2)  # the echo backs up meanwhile
            return await reader.readexactly(len(data))

        reading = asyncio.create_task(read_back())
        writer.write(data)
        await writer.drain()
        echoed = await asyncio.wait_for(reading, WAIT)
        writer.close()
        echo = made[0]
        assert isinstance(echo, Echo)
        assert await asyncio.wait_for(echo.lost, WAIT) is None
    finally:
        server.close()
    assert echoed == data
    assert echo.received == len(data)
    assert echo.write_pauses >= 1  # its writes were queued, paused and resumed
    assert echo.eof  # the client's close_notify


async def test_close_sends_what_is_queued_then_close_notify(
    tls_files: tuple[Path, Path],
) -> None:
    server, port, _ = await serve(tls_files, Farewell)

    def read_all() -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        # A close without close_notify would raise SSLEOFError here.
        with client_context(tls_files).wrap_socket(
            raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
        ) as sock:
            received = b""
            while chunk := sock.recv(1024):
                received += chunk
            return received

    try:
        assert await asyncio.to_thread(read_all) == b"bye\n"
    finally:
        server.close()


async def test_failed_and_unfinished_handshakes_make_no_connection(
    tls_files: tuple[Path, Path],
) -> None:
    server, port, made = await serve(tls_files, Echo, handshake_timeout=0.2)

    def closed_after(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(request)
            received = b""
            try:
                while chunk := sock.recv(1024):
                    received += chunk
            except ConnectionResetError:  # closed with the request unread
                pass
            return received

    try:
        plain = await asyncio.to_thread(closed_after, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        silent = await asyncio.to_thread(closed_after, b"")  # dropped after the timeout
        assert not plain.startswith(b"HTTP/")
        assert silent == b""
        assert made == []
        # and a real client is served as usual afterwards
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(tls_files)
        )
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"ping"
        writer.close()
    finally:
        server.close()
    assert len(made) == 1


async def test_closing_the_server_drops_handshakes_under_way(
    tls_files: tuple[Path, Path],
) -> None:
    server, port, made = await serve(tls_files, Echo)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        for _ in range(100):  # until the server has accepted it
            await asyncio.sleep(0.01)
            if server._handshakes:
                break
        assert server._handshakes
        server.close()
        assert await asyncio.to_thread(sock.recv, 1024) == b""
    assert made == []
    assert not server.sockets
