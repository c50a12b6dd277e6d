"""A TLS listener whose connections run on `ssl.SSLSocket`s, for the Web API door.

asyncio's own TLS (`loop.create_server(ssl=...)`) runs every record through a Python
layer over memory buffers (`asyncio.sslproto`): a request and its reply cost about as
many interpreter steps in that layer as in aiohttp's request and response objects. An
`SSLSocket` in non-blocking mode does the same reads and writes from its C code, on
the socket itself. The TLS is the same OpenSSL with the same context::

    server = TlsServer(protocol_factory, context, handshake_timeout=30.0)
    await server.bind("0.0.0.0", 443)    # then server.sockets[0].getsockname()
    ...
    server.close()                      # stops accepting; drops unfinished handshakes

Each connection: accepted, TLS handshake (bounded by `handshake_timeout`), then a
`TlsTransport` handed to a new protocol. A handshake that fails (plain HTTP, a client
that gives up, a scanner) is closed and logged at debug level only: clients such as
Check Point's Go SDK open bare TLS connections as probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("crdtmds.web_api")

READ_SIZE = 16 * 1024
"""Bytes asked of one read: the most a TLS record carries (a read returns one record at
most; what a larger record would leave is taken while `pending()`)."""
HIGH_WATER = 64 * 1024
"""Bytes queued for sending above which the protocol is asked to pause writing."""
CLOSE_TIMEOUT = 30.0
"""Seconds a closed connection may take to send what is queued before it is dropped."""
ACCEPT_BURST = 100
"""Connections accepted per wake-up of the listening socket."""
ACCEPT_RETRY = 1.0
"""Seconds accepting pauses after the system refused one (out of file descriptors)."""

ProtocolFactory = Callable[[], asyncio.Protocol]


class TlsServer:
    """Accepts on its listening sockets (one per address of the host) and runs each
    connection's TLS handshake."""

    def __init__(
        self, factory: ProtocolFactory, context: ssl.SSLContext, *, handshake_timeout: float
    ) -> None:
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.sockets: list[socket.socket] = []
        self._handshakes: set[_Handshake] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def bind(self, host: str | None, port: int) -> None:
        """Listen on `host:port` (every address of `host`; all of them when None)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in dict.fromkeys(
            (i[0], i[1], i[2], "", i[4]) for i in infos
        ):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host lacks (IPv6 turned off): the others serve
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(socket.SOMAXCONN)
                sock.setblocking(False)
            except OSError:
                sock.close()
                self.close()
                raise
            self.sockets.append(sock)
            if port == 0:  # the other addresses take the port picked for the first
                port = sock.getsockname()[1]
        if not self.sockets:
            raise OSError(f"no address to listen on for {host}:{port}")
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting, drop the handshakes under way; established connections are
        their protocols' to close."""
        for sock in self.sockets:
            if self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []
        for handshake in list(self._handshakes):
            handshake.drop()

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors or memory: wait, then go on
                log.warning("accepting a Web API connection failed: %s", exc)
                self._pause_accepting(listening)
                return
            self._handshake(sock)

    def _pause_accepting(self, listening: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        loop.remove_reader(listening.fileno())

        def resume() -> None:
            if listening in self.sockets:
                loop.add_reader(listening.fileno(), self._accept, listening)

        loop.call_later(ACCEPT_RETRY, resume)

    def _handshake(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS set-up failed: %s", exc)
            sock.close()
            return
        assert self._loop is not None
        handshake = _Handshake(self, self._loop, tls)
        self._handshakes.add(handshake)
        handshake.step()

    def _established(self, handshake: _Handshake) -> None:
        self._handshakes.discard(handshake)
        assert self._loop is not None
        TlsTransport(self._loop, handshake.sock, self.factory())


class _Handshake:
    """One connection's TLS handshake, stepped whenever its socket is ready."""

    def __init__(self, server: TlsServer, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket):
        self.server = server
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self._timer = loop.call_later(server.handshake_timeout, self._timed_out)

    def step(self) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.loop.add_reader(self.fd, self.step)
        except ssl.SSLWantWriteError:
            self.loop.add_writer(self.fd, self.step)
        except (ssl.SSLError, OSError) as exc:  # not TLS, or the client left
            log.debug("TLS handshake failed: %s", exc)
            self.drop()
        else:
            self._timer.cancel()
            self.server._established(self)

    def _timed_out(self) -> None:
        log.debug("TLS handshake not finished in %g s", self.server.handshake_timeout)
        self.drop()

    def drop(self) -> None:
        self._timer.cancel()
        self.server._handshakes.discard(self)
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
        self.sock.close()


class TlsTransport(asyncio.Transport):
    """An asyncio transport over a connected, handshaken, non-blocking `SSLSocket`.

    Reads deliver what one wake-up decrypts; writes go to the socket at once and
    queue only what it cannot take yet (a write the TLS layer could not finish is
    retried with the same bytes, as OpenSSL requires). `close` sends what is queued,
    then TLS's close_notify, then closes the socket."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket, protocol: asyncio.Protocol
    ) -> None:
        super().__init__(extra=_extra_of(sock))
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._writing_paused = False
        self._reading = True
        self._read_wants_write = False  # a read had TLS send something first
        self._closing = False
        self._lost = False
        protocol.connection_made(self)
        if self._reading and not self._lost:
            loop.add_reader(self._fd, self._read_ready)

    # reading

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
            while data and self._sock.pending():
                data += self._sock.recv(READ_SIZE)
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            self._read_wants_write = True
            self._loop.remove_reader(self._fd)
            self._loop.add_writer(self._fd, self._write_ready)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        if data:
            self._protocol.data_received(data)
            return
        self._loop.remove_reader(self._fd)
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost:
            return
        if not data:
            return
        if self._queue:
            self._enqueue(bytes(data))
            return
        try:
            sent = self._sock.send(data)  # all of it, or a want-error
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        if sent < len(data):
            self._enqueue(bytes(data[sent:]))
            self._loop.add_writer(self._fd, self._write_ready)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued += len(data)
        if not self._writing_paused and self._queued > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _write_ready(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            if self._reading and not self._closing:
                self._loop.add_reader(self._fd, self._read_ready)
                self._read_ready()
            if self._lost:
                return
        try:
            while self._queue:
                first = self._queue[0]
                sent = self._sock.send(first)
                self._queued -= sent
                if sent < len(first):
                    self._queue[0] = first[sent:]
                else:
                    self._queue.popleft()
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._resume_writing_below_low()
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        self._loop.remove_writer(self._fd)
        self._resume_writing_below_low()
        if self._closing:
            self._finish_close()

    def _resume_writing_below_low(self) -> None:
        if self._writing_paused and self._queued <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close

    def get_write_buffer_size(self) -> int:
        return self._queued

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    # closing

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._queue:  # sent first, unless the client stops reading
            self._loop.call_later(CLOSE_TIMEOUT, self.abort)
        else:
            self._finish_close()

    def abort(self) -> None:
        self._lose(None)

    def _finish_close(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self._sock.unwrap()  # sends close_notify; the peer's is not awaited
        self._lose(None)

    def _fail(self, exc: BaseException) -> None:
        log.debug("Web API connection failed: %s", exc)
        self._lose(exc)

    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._queue.clear()
        self._queued = 0
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol


def _extra_of(sock: ssl.SSLSocket) -> dict[str, Any]:
    """What `get_extra_info` answers, as asyncio's TLS transports name it."""
    extra: dict[str, Any] = {
        "socket": sock,
        "sslcontext": sock.context,
        "ssl_object": sock,
        "cipher": sock.cipher(),
        "compression": sock.compression(),
        "peercert": sock.getpeercert(),
    }
    with contextlib.suppress(OSError):
        extra["peername"] = sock.getpeername()
    with contextlib.suppress(OSError):
        extra["sockname"] = sock.getsockname()
    return extra
