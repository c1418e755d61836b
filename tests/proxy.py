"""A small reverse proxy for rolling-restart tests, doing what deploy/README.md asks of a real
one: it checks each backend's /readyz every `check_seconds` and sends new connections only to
those that answered 200, round robin; a connection a backend refuses goes to the next one (the
request was not sent, so even a POST may be retried). It forwards bytes, one client connection
to one backend connection, so clients should send `Connection: close`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading

import httpx


class Proxy:
    def __init__(self, backends: list[int], check_seconds: float = 0.2) -> None:
        self.backends = backends  # ports on 127.0.0.1
        self.check_seconds = check_seconds
        self.healthy: set[int] = set(backends)
        self.connections: dict[int, int] = dict.fromkeys(backends, 0)
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        checks = asyncio.ensure_future(self._check_forever())
        self._ready.set()
        async with self._server:
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serve_forever()
        checks.cancel()

    async def _check_forever(self) -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                for port in self.backends:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/readyz")
                        up = response.status_code == 200
                    except httpx.HTTPError:
                        up = False
                    (self.healthy.add if up else self.healthy.discard)(port)
                await asyncio.sleep(self.check_seconds)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        turn = next(self._turn)
        order = (
            self.backends[turn % len(self.backends) :] + self.backends[: turn % len(self.backends)]
        )
        # Healthy ones first; the others only if none is (a check may lag behind a recovery).
        for port in sorted(order, key=lambda p: p not in self.healthy):
            try:
                connection = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                self.healthy.discard(port)
                continue
            self.connections[port] += 1
            return connection
        return None

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(10)
