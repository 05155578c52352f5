"""A TCP proxy whose upstream (client -> server) bandwidth can be limited while it runs: a slow
network with real TCP back-pressure between a browser and the app. (Chromium's own network
emulation throttles HTTP requests but not WebSocket frames: measured with Chromium 156, a
45 KB/s stream went through an "8 KB/s" link with half a second of lag.)"""
from __future__ import annotations

import asyncio
import threading


class ThrottledProxy:
    """``ThrottledProxy(port).start()`` listens on ``self.port``; ``up_bytes_per_s`` (None:
    unlimited) limits what clients send, from now on; ``stop()`` ends it."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.up_bytes_per_s: float | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="throttle")

    def start(self) -> "ThrottledProxy":
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, client_r, client_w) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return

        async def pipe(reader, writer, throttled: bool) -> None:
            try:
                while data := await reader.read(4096):
                    rate = self.up_bytes_per_s if throttled else None
                    if rate:
                        await asyncio.sleep(len(data) / rate)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_r, server_w, True), pipe(server_r, client_w, False))
