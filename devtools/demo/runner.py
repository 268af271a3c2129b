"""Runs the demo's steps (:mod:`devtools.demo.steps`), prints the summary, serves until
stopped, and cleans up.

Every process a step starts is registered for cleanup before it is started, so whatever
happens (a failed step, Ctrl-C, SIGTERM, the ``--duration`` deadline) the demo stops all of
them and removes its working directory (unless asked to keep it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console

from devtools.demo.errors import DemoError, DemoInterrupted, StopRequested
from devtools.demo.latency import edge_answer_percentiles
from devtools.demo.progress import StepPrinter
from devtools.demo.run_state import DemoOptions, DemoRun, describe
from devtools.demo.signals import StopSignals
from devtools.demo.steps import STEPS
from devtools.demo.summary import DemoOutcome, Endpoints, print_summary
from devtools.localservers import ServerBinaryNotFoundError, ServerStartupError

_WATCH_INTERVAL_S = 0.2

__all__ = ["DemoOptions", "run_demo"]


def run_demo(options: DemoOptions, console: Console) -> None:
    """Runs the steps, prints the summary and serves until stopped; cleans up in any case.

    Raises :class:`DemoError` when a step fails and :class:`DemoInterrupted` on a stop
    signal before the edges serve; a stop signal while they serve is the normal end.
    """
    started = time.monotonic()
    deadline = None if options.duration_s is None else started + options.duration_s
    printer = StepPrinter(console, [step.title for step in STEPS])
    signals = StopSignals()
    with signals:
        workdir = Path(tempfile.mkdtemp(prefix="proxima-demo-", dir=options.workdir_parent))
        run = DemoRun(options, workdir, printer, ExitStack(), signals, started_at=started)
        serving = False
        try:
            printer.banner(workdir, _closing(options))
            for number, step in enumerate(STEPS, 1):
                with printer.step(number), _one_line_server_errors(options.keep):
                    step.action(run)
            print_summary(console, _outcome(run))
            serving = True
            _serve_until(run, deadline, console)
        except StopRequested as stop:
            if not serving:
                raise DemoInterrupted(f"stopped by {stop.signal_name} before the end") from None
            console.print(f"{stop.signal_name}: stopping.")
        finally:
            signals.hold()
            _clean_up(run, console)


def _closing(options: DemoOptions) -> str:
    until = "Ctrl-C"
    if options.duration_s is not None:
        until = f"{options.duration_s:g} s after the start (--duration) or Ctrl-C"
    kept = "kept (--keep)" if options.keep else "removed"
    return f"serve until {until}, stop every process, working directory {kept}"


@contextmanager
def _one_line_server_errors(keep: bool) -> Iterator[None]:
    """Server start-up failures as short :class:`DemoError` messages (a line per problem)."""
    try:
        yield
    except ServerBinaryNotFoundError as exc:
        missing = str(exc).splitlines()
        if len(missing) == 1:
            raise DemoError(missing[0]) from exc
        listed = "".join(f"\n  - {line}" for line in missing)
        raise DemoError(f"{len(missing)} server binaries are missing:{listed}") from exc
    except ServerStartupError as exc:
        lines = [line.strip() for line in exc.log_tail.splitlines() if line.strip()]
        where = f"its log: {exc.log_path}" if keep else "--keep keeps its log"
        last_words = f": {lines[-1]}" if lines else ""
        raise DemoError(f"{exc.summary} ({where}){last_words}") from exc


def _outcome(run: DemoRun) -> DemoOutcome:
    assert run.shop and run.history and run.bundle and run.replay, "every step has run"
    assert run.history_counts and run.final_counts, "every step has run"
    assert run.nats and run.kafka and run.redis and run.central, "every step has run"
    return DemoOutcome(
        shop=run.shop,
        history=run.history,
        history_counts=run.history_counts,
        bundle=run.bundle,
        bundle_ready_s=run.bundle_ready_s,
        retrain_report=run.retrain_report,
        replay=run.replay,
        final_counts=run.final_counts,
        server_latency={
            edge.address.name: edge_answer_percentiles(edge.base_url) for edge in run.edges
        },
        monitor_latency=run.monitor_latency,
        rules_version=run.rules_version,
        endpoints=Endpoints(
            nats_url=run.nats.url,
            nats_monitor=f"http://127.0.0.1:{run.nats.monitor_port}",
            kafka_bootstrap=run.kafka.bootstrap,
            redis_url=run.redis.url,
            central_metrics=run.central.metrics_url,
            pids={describe(server): server.pid for server in run.servers},
        ),
    )


def _serve_until(run: DemoRun, deadline: float | None, console: Console) -> None:
    if deadline is None:
        console.print("\nEdges are serving. Press Ctrl-C to stop.")
    elif (left := deadline - time.monotonic()) >= 1.0:
        console.print(f"\nEdges are serving for {left:.0f} s more (--duration), or until Ctrl-C.")
    while deadline is None or time.monotonic() < deadline:
        run.check_processes()
        pause = _WATCH_INTERVAL_S if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(_WATCH_INTERVAL_S, pause)))
    console.print("Duration reached: stopping.")


def _clean_up(run: DemoRun, console: Console) -> None:
    running = sum(server.is_running for server in run.servers)
    started = time.monotonic()
    try:
        run.cleanup.close()  # stops the servers, the last started first
    finally:
        took = time.monotonic() - started
        stopped = f"Stopped {running} process{'' if running == 1 else 'es'} in {took:.1f} s"
        if run.options.keep:
            console.print(f"{stopped}; kept {run.workdir}.", soft_wrap=True)
        else:
            try:
                shutil.rmtree(run.workdir)
            except OSError as exc:
                console.print(f"{stopped}; could not remove {run.workdir}: {exc}", soft_wrap=True)
            else:
                console.print(f"{stopped}; removed {run.workdir}.", soft_wrap=True)
