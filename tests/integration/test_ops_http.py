"""`run`'s HTTP options: `--http-port 0` serves nothing at all, a port already in use refuses the
start with one line before anything touches Kafka, and a value that is no port is named."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.integration.test_cli import run_cli
from tests.kafka_support import TopicReader, produce, user_message
from tests.worker_processes import WorkerProcess, wait_for_balanced_group, write_bundle
from worker.kafka.broker import free_loopback_port


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on, from /proc: its socket inodes in LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def test_http_port_0_serves_nothing(bootstrap: str, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, bootstrap)
    bundle.env["COEXISTENCE_ROUTER_HTTP_PORT"] = "8080"  # the flag wins over the variable
    worker = await WorkerProcess.start(bundle, args=["--http-port", "0"])
    try:
        await wait_for_balanced_group([worker], 6)
        async with TopicReader(bootstrap, bundle.topics.calm) as inbox:
            await produce(
                bootstrap, bundle.topics.input, [user_message("u", "x", "transfer_money")]
            )
            await inbox.wait_for(1)  # it routes
        assert listening_ports(worker.process.pid) == set()
    finally:
        assert await worker.stop() == 0, worker.output
    assert "serving /metrics" not in worker.output


async def test_a_port_in_use_refuses_the_start_in_one_line(tmp_path: Path) -> None:
    # No broker at all: the refusal must come before anything tries to reach one.
    bundle = write_bundle(tmp_path, f"127.0.0.1:{free_loopback_port()}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--config", str(bundle.config), "--endpoints", str(bundle.endpoints)]
        env = {**bundle.env, "COEXISTENCE_ROUTER_HTTP_PORT": str(port)}
        code, _, stderr = await run_cli("run", *args, "--http-host", "127.0.0.1", env=env)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert lines[-1] == (
        f"refusing to start: --http-port {port}: 127.0.0.1:{port} is already in use"
    ), stderr
    assert "kafka" not in stderr.lower()


async def test_a_value_that_is_no_port_is_named(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, f"127.0.0.1:{free_loopback_port()}")
    args = ["run", "--config", str(bundle.config), "--endpoints", str(bundle.endpoints)]
    env = {**bundle.env, "COEXISTENCE_ROUTER_HTTP_PORT": "eighty"}
    code, _, stderr = await run_cli(*args, env=env)
    assert code == 2
    assert "COEXISTENCE_ROUTER_HTTP_PORT must be a port number from 0 to 65535, not 'eighty'" in (
        stderr
    )
    code, _, stderr = await run_cli(*args, "--http-port", "70000", env=env)
    assert code == 2 and "--http-port must be a port number from 0 to 65535, not '70000'" in stderr
