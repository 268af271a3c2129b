"""Helpers shared by the HTTP benchmarks: pinned server processes, wrk runs, small HTTP calls.

A server under test runs as a subprocess pinned with ``taskset`` to one core; wrk runs
pinned to another. :func:`run_wrk` drives one wrk run over a rotating list of request
paths (a generated Lua script) and parses its ``--latency`` report.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

LOCALHOST: Final = "127.0.0.1"
_POLL_S: Final = 0.05
_PORT_ATTEMPTS: Final = 3

INSTALL_HINTS: Final = {
    "wrk": "install it with `apt-get install wrk` (or build it from github.com/wg/wrk)",
    "taskset": "install it with `apt-get install util-linux`",
}


class BenchError(RuntimeError):
    """The benchmark cannot go on (a tool is missing, a server did not start...)."""


def require_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        hint = INSTALL_HINTS.get(name, "install it and put it on PATH")
        raise BenchError(f"'{name}' not found on PATH; {hint}")
    return found


def venv_script(name: str) -> str:
    """A console script installed next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return require_binary(name)


def pick_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def pinned(core: int, argv: Sequence[str]) -> list[str]:
    return [require_binary("taskset"), "-c", str(core), *argv]


def check_cores(*cores: int) -> None:
    available = os.sched_getaffinity(0)
    missing = [c for c in cores if c not in available]
    if missing:
        raise BenchError(
            f"core(s) {missing} not available to this process (have {sorted(available)}); "
            "pick others with --server-core/--load-core"
        )


# --- HTTP ----------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def http_post_json(url: str, body: Any, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


# --- server processes ----------------------------------------------------------------------


class HttpServer:
    """A server subprocess on a free port, ready once ``ready_path`` answers 200.

    ``argv_for(port)`` builds the command line; the process's output goes to ``log_path``;
    ``env`` is its whole environment (this process's when ``None``).
    ``stop()`` sends SIGTERM and waits, then SIGKILLs; it is safe to call twice.
    """

    def __init__(
        self,
        name: str,
        argv_for: Callable[[int], Sequence[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/healthz",
        startup_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self._argv_for = argv_for
        self.log_path = log_path
        self._env = dict(env) if env is not None else dict(os.environ)
        self._ready_path = ready_path
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.port = pick_free_port()
            argv = list(self._argv_for(self.port))
            with self.log_path.open("ab") as log:
                log.write(f"\n=== {' '.join(argv)}\n".encode())
                log.flush()
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                )
            if self._wait_ready(final=attempt == _PORT_ATTEMPTS):
                return self
        raise AssertionError("unreachable: the final attempt raises")

    def _wait_ready(self, *, final: bool) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        url = self.base_url + self._ready_path
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                if final:
                    raise BenchError(
                        f"{self.name} exited with {code}; log ends:\n{self.log_tail()}"
                    )
                return False
            try:
                status, _ = http_get(url, timeout=1.0)
                if status == 200:
                    return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"{self.name} not ready in {self._startup_timeout:.0f}s; "
                    f"log ends:\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def stop(self, timeout: float = 15.0) -> None:
        process = self._process
        self._process = None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "<no log>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- wrk -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


_UNITS_MS: Final = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_DURATION = r"([\d.]+)(us|ms|s|m)"


def write_paths_script(path: Path, paths: Sequence[str]) -> Path:
    """A wrk Lua script that sends GET requests to ``paths`` in turn (one wrk thread)."""
    listed = ",\n".join(f"  {json.dumps(p)}" for p in paths)
    path.write_text(
        "local paths = {\n" + listed + "\n}\n"
        "local n = #paths\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % n + 1\n"
        '  return wrk.format("GET", paths[i])\n'
        "end\n",
        encoding="utf-8",
    )
    return path


def run_wrk(
    base_url: str,
    *,
    connections: int,
    duration_s: float,
    core: int,
    script: Path | None = None,
    path: str = "/",
) -> WrkResult:
    argv = [
        require_binary("wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(base_url + path)
    finished = subprocess.run(
        pinned(core, argv),
        capture_output=True,
        text=True,
        check=False,
        timeout=duration_s + 60,
    )
    if finished.returncode != 0:
        output = finished.stderr or finished.stdout
        raise BenchError(f"wrk failed ({finished.returncode}): {output}")
    return parse_wrk(finished.stdout)


def parse_wrk(text: str) -> WrkResult:
    def duration_ms(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+{_DURATION}\s*$", text, re.MULTILINE)
        if found is None:
            raise BenchError(f"no {label} line in wrk output:\n{text}")
        return float(found.group(1)) * _UNITS_MS[found.group(2)]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if rate is None or total is None:
        raise BenchError(f"cannot read wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(total.group(1)),
        requests_per_s=float(rate.group(1)),
        p50_ms=duration_ms("50%"),
        p99_ms=duration_ms("99%"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


# --- interference ---------------------------------------------------------------------------


def _core_ticks(core: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one core since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                fields = [int(v) for v in line.split()[1:]]
                idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
                return sum(fields[:8]) - idle, sum(fields[:8])
    raise BenchError(f"no cpu{core} line in /proc/stat")


def _process_ticks(pid: int) -> int:
    """user + system clock ticks of a process (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


class CpuMeter:
    """How busy a core was with processes other than the ones named, over an interval.

    Start with :meth:`start`, read with :meth:`others`: the share of the core's time (0-1)
    spent outside ``pids`` (and, with ``with_children``, outside the children this process
    reaped in between, such as a pinned wrk). Steal time counts as others' too. Machines
    here are shared: a high figure means that run was disturbed.
    """

    def __init__(self, core: int, pids: Sequence[int], *, with_children: bool = False) -> None:
        self.core = core
        self.pids = list(pids)
        self.with_children = with_children
        self._start: tuple[int, int, int, float] = (0, 0, 0, 0.0)

    def start(self) -> None:
        busy, total = _core_ticks(self.core)
        own = sum(_process_ticks(pid) for pid in self.pids)
        self._start = (busy, total, own, _children_seconds())

    def others(self) -> float:
        busy, total = _core_ticks(self.core)
        own = sum(_process_ticks(pid) for pid in self.pids)
        start_busy, start_total, start_own, start_children = self._start
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        children = (_children_seconds() - start_children) * ticks_per_s
        if not self.with_children:
            children = 0.0
        elapsed = total - start_total
        if elapsed <= 0:
            return 0.0
        foreign = (busy - start_busy) - (own - start_own) - children
        return max(0.0, min(1.0, foreign / elapsed))


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- statistics ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus-style quantile from cumulative ``(upper_bound, count)`` buckets, linear
    within the bucket; the last finite bound when it falls in ``+Inf``."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
