"""Inference cost of a ranker: scikit-learn ``predict_proba`` vs ONNX Runtime fp32 vs int8.

Trains the three ranker kinds on synthetic data, converts and quantizes them with
:mod:`model_export`, and times one call per batch of candidate rows (1, 100, 500) through
scikit-learn and through :class:`protocol.ranker.OnnxRanker`. Calls of the three engines
are interleaved round by round so a noisy machine disturbs them alike; ratios are against
scikit-learn in the same run. scikit-learn is held to one thread while timed, as ONNX
Runtime is, so both are measured per core.

    python bench/inference.py            # tables
    python bench/inference.py --json     # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Final

import numpy as np
import onnxruntime
import skl2onnx
import sklearn
from numpy.typing import NDArray
from rich import box
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from model_export.convert import to_onnx
from model_export.gates import parity_gate
from model_export.quantize import quantize_int8
from protocol.ranker import OnnxRanker

BATCH_SIZES: Final = (1, 100, 500)
HOLDOUT_ROWS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Timing:
    median_us: float
    p99_us: float


@dataclass(slots=True)
class ModelReport:
    kind: str
    training_seconds: float
    fp32_bytes: int
    int8_bytes: int | None
    quantized_operators: list[str]
    quantization_note: str
    fp32_max_abs_diff: float
    fp32_parity_passed: bool
    int8_max_abs_diff: float | None
    # batch size -> engine -> timing
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parse_arguments(argv)
    progress = Console(stderr=True)
    features, labels = make_classification(
        n_samples=arguments.rows + HOLDOUT_ROWS,
        n_features=arguments.features,
        n_informative=arguments.features // 2,
        n_redundant=arguments.features // 4,
        weights=[0.8],
        flip_y=0.05,
        random_state=arguments.seed,
    )
    features = features.astype(np.float32)
    train_x, train_y = features[: arguments.rows], labels[: arguments.rows]
    holdout = features[arguments.rows :]

    reports = []
    for kind, make_model in _model_kinds(arguments.mlp_hidden, arguments.seed).items():
        progress.print(f"[dim]{kind}: training on {arguments.rows:,} rows…[/dim]")
        reports.append(_measure(kind, make_model(), train_x, train_y, holdout, arguments, progress))

    if arguments.json:
        print(json.dumps(_as_json(reports, arguments), indent=2, ensure_ascii=False))
    else:
        _print_tables(reports, arguments)
    return 0


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--rows", type=int, default=50_000, help="training rows")
    parser.add_argument("--features", type=int, default=32, help="features per row (24-40)")
    parser.add_argument("--repeats", type=int, default=1000, help="timed calls per engine")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per engine")
    parser.add_argument(
        "--mlp-hidden", default="64,32", help="MLP hidden layer sizes, comma-separated"
    )
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    if not 24 <= arguments.features <= 40:
        parser.error("--features must be between 24 and 40")
    arguments.mlp_hidden = tuple(int(size) for size in arguments.mlp_hidden.split(","))
    return arguments


def _model_kinds(mlp_hidden: tuple[int, ...], seed: int) -> dict[str, Callable[[], Any]]:
    hidden = "x".join(str(size) for size in mlp_hidden)
    return {
        "LogReg": lambda: LogisticRegression(max_iter=1000),
        f"MLP({hidden})": lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=mlp_hidden,
                max_iter=40,
                early_stopping=True,
                random_state=seed,
            ),
        ),
        "HistGB": lambda: HistGradientBoostingClassifier(random_state=seed),
    }


def _measure(
    kind: str,
    model: Any,
    train_x: NDArray[np.float32],
    train_y: NDArray[np.int64],
    holdout: NDArray[np.float32],
    arguments: argparse.Namespace,
    progress: Console,
) -> ModelReport:
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The bench times inference; whether training converged in 40 epochs does not matter.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    training_seconds = time.perf_counter() - started

    n_features = train_x.shape[1]
    fp32 = to_onnx(model, n_features)
    quantized = quantize_int8(fp32)
    fp32_gate = parity_gate(model, fp32, holdout)
    int8_gate = (
        parity_gate(model, quantized.model, holdout, max_abs_diff=1.0)
        if quantized.model is not None
        else None
    )
    report = ModelReport(
        kind=kind,
        training_seconds=round(training_seconds, 2),
        fp32_bytes=len(fp32),
        int8_bytes=None if quantized.model is None else len(quantized.model),
        quantized_operators=quantized.quantized_operators,
        quantization_note=quantized.note,
        fp32_max_abs_diff=fp32_gate.max_abs_diff,
        fp32_parity_passed=fp32_gate.passed,
        int8_max_abs_diff=None if int8_gate is None else int8_gate.max_abs_diff,
    )

    rankers = {"onnx_fp32": OnnxRanker(fp32, n_features)}
    if quantized.model is not None:
        rankers["onnx_int8"] = OnnxRanker(quantized.model, n_features)
    progress.print(f"[dim]{kind}: timing…[/dim]")
    with threadpool_limits(limits=1):
        for batch_size in BATCH_SIZES:
            rows = np.ascontiguousarray(holdout[:batch_size])
            calls: dict[str, Callable[[], object]] = {"sklearn": partial(model.predict_proba, rows)}
            for engine, ranker in rankers.items():
                calls[engine] = partial(ranker.score, rows)
            report.timings[batch_size] = _time_interleaved(
                calls, arguments.repeats, arguments.warmup
            )
    return report


def _time_interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, Timing]:
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples = {engine: np.empty(repeats, dtype=np.int64) for engine in calls}
    engines = list(calls)
    for round_index in range(repeats):
        # Rotating the order keeps any one engine from always running right after another.
        shift = round_index % len(engines)
        for engine in engines[shift:] + engines[:shift]:
            call = calls[engine]
            started = time.perf_counter_ns()
            call()
            samples[engine][round_index] = time.perf_counter_ns() - started
    return {
        engine: Timing(
            median_us=round(float(np.median(ns)) / 1000, 1),
            p99_us=round(float(np.percentile(ns, 99)) / 1000, 1),
        )
        for engine, ns in samples.items()
    }


def _as_json(reports: list[ModelReport], arguments: argparse.Namespace) -> dict[str, Any]:
    return {
        "environment": _environment(),
        "config": {
            "rows": arguments.rows,
            "features": arguments.features,
            "repeats": arguments.repeats,
            "warmup": arguments.warmup,
            "seed": arguments.seed,
            "mlp_hidden": list(arguments.mlp_hidden),
        },
        "models": [
            {
                **asdict(report),
                "timings": {
                    str(batch): {
                        engine: {
                            **asdict(timing),
                            "speedup_vs_sklearn": _speedup(timings["sklearn"], timing),
                        }
                        for engine, timing in timings.items()
                    }
                    for batch, timings in report.timings.items()
                },
            }
            for report in reports
        ],
    }


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _speedup(baseline: Timing, timing: Timing) -> float:
    return round(baseline.median_us / timing.median_us, 2)


def _print_tables(reports: list[ModelReport], arguments: argparse.Namespace) -> None:
    console = Console()
    environment = _environment()
    console.print(
        f"{arguments.features} features, trained on {arguments.rows:,} rows; "
        f"{arguments.repeats} timed calls per cell after {arguments.warmup} warm-up, "
        "engines interleaved, one thread each.\n"
        f"scikit-learn {environment['scikit-learn']}, skl2onnx {environment['skl2onnx']}, "
        f"onnxruntime {environment['onnxruntime']}, {environment['cpus']} CPUs. "
        "Cells: median / p99 µs per call; speedup = scikit-learn median / engine median."
    )
    for batch_size in BATCH_SIZES:
        table = Table(
            title=f"{batch_size} row{'s' if batch_size > 1 else ''} per call",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("model", no_wrap=True)
        table.add_column("scikit-learn", justify="right")
        table.add_column("ONNX fp32", justify="right")
        table.add_column("speedup", justify="right")
        table.add_column("ONNX int8", justify="right")
        table.add_column("speedup", justify="right")
        for report in reports:
            timings = report.timings[batch_size]
            baseline = timings["sklearn"]
            cells = [report.kind, _timing_cell(baseline)]
            for engine in ("onnx_fp32", "onnx_int8"):
                timing = timings.get(engine)
                if timing is None:
                    cells += ["—", ""]
                else:
                    cells += [_timing_cell(timing), f"{_speedup(baseline, timing):.1f}x"]
            table.add_row(*cells)
        console.print(table)

    models = Table(title="Models", box=box.SIMPLE_HEAD)
    models.add_column("model", no_wrap=True)
    models.add_column("fit s", justify="right")
    models.add_column("fp32 B", justify="right")
    models.add_column("int8 B", justify="right")
    models.add_column("int8 ops")
    models.add_column("fp32 Δp", justify="right")
    models.add_column("gate", justify="right")
    models.add_column("int8 Δp", justify="right")
    for report in reports:
        models.add_row(
            report.kind,
            f"{report.training_seconds:.1f}",
            f"{report.fp32_bytes:,}",
            "—" if report.int8_bytes is None else f"{report.int8_bytes:,}",
            ", ".join(report.quantized_operators) or "nothing",
            f"{report.fp32_max_abs_diff:.1e}",
            "pass" if report.fp32_parity_passed else "FAIL",
            "—" if report.int8_max_abs_diff is None else f"{report.int8_max_abs_diff:.3f}",
        )
    console.print(models)
    console.print(
        f"Δp: largest |difference| from scikit-learn's P(class 1) over {HOLDOUT_ROWS:,} held-out "
        "rows; gate: fp32 parity within 1e-4; int8 ops: operators replaced by int8 forms."
    )


def _timing_cell(timing: Timing) -> str:
    return f"{_microseconds(timing.median_us)} / {_microseconds(timing.p99_us)}"


def _microseconds(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
