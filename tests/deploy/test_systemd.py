"""deploy/edge/systemd against the code: command, settings file, environment, state paths."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.config import EdgeSettings
from tests.deploy import manifests

UNIT = manifests.SYSTEMD_DIR / "proxima-edge.service"
SETTINGS_FILE = manifests.SYSTEMD_DIR / "edge.toml"
ENV_EXAMPLE = manifests.SYSTEMD_DIR / "edge.env.example"
DRAIN_FACTOR = 2.5  # see tests/deploy/test_k8s.py
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}

Unit = dict[str, list[tuple[str, str]]]


@pytest.fixture(scope="module")
def unit() -> Unit:
    return manifests.parse_unit(UNIT.read_text(encoding="utf-8"))


def service(unit: Unit, key: str) -> str:
    values = manifests.unit_values(unit, "Service", key)
    assert values, f"[Service] has no {key}="
    return values[-1]


def exec_words(unit: Unit) -> list[str]:
    return shlex.split(service(unit, "ExecStart"))


def seconds(value: str) -> float:
    units = {"ms": 1e-3, "s": 1.0, "min": 60.0}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "").isdigit():
            return float(value[: -len(suffix)]) * factor
    return float(value)


def unit_environment(unit: Unit) -> dict[str, str]:
    """``Environment=`` entries with the ``%l`` specifier (short host name) resolved."""
    env: dict[str, str] = {}
    for entry in manifests.unit_values(unit, "Service", "Environment"):
        for word in shlex.split(entry):
            key, _, value = word.partition("=")
            env[key] = value.replace("%l", socket.gethostname().split(".")[0])
    return env


def state_directories(unit: Unit) -> list[Path]:
    names = service(unit, "StateDirectory").split()
    return [Path("/var/lib") / name for name in names]


def unit_settings(unit: Unit) -> EdgeSettings:
    """Settings as the unit starts the edge: ``--config`` read from the example file, then
    the unit's Environment= overridden by the example EnvironmentFile, then the flags."""
    words = exec_words(unit)
    flags = manifests.parse_edge_args(_with_example_config(words[1:]))
    config_file = flags.pop("config_file")
    env = unit_environment(unit)
    env.update(manifests.parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8")))
    return manifests.load_edge_settings(env=env, file=config_file, flags=flags)


def _with_example_config(args: list[str]) -> list[str]:
    if "--config" not in args:
        return args
    index = args.index("--config") + 1
    assert Path(args[index]).name == SETTINGS_FILE.name
    return [*args[:index], str(SETTINGS_FILE), *args[index + 1 :]]


def test_exec_start_runs_the_edge_with_flags_that_exist(unit: Unit) -> None:
    words = exec_words(unit)
    assert Path(words[0]).name == "proxima" and Path(words[0]).is_absolute()
    serve, rest = manifests.resolve_command(words[1:])
    assert words[1:3] == list(manifests.EDGE_COMMAND) and serve.name == "serve"
    unknown = set(manifests.flags_in(rest)) - manifests.option_names(serve)
    assert not unknown, f"flags proxima edge serve does not take: {unknown}"


def test_settings_file_and_environment_load_through_the_edge_loader(unit: Unit) -> None:
    settings = unit_settings(unit)
    assert settings.region == "eu"
    assert settings.node == socket.gethostname().split(".")[0]
    assert settings.nats_settings() is not None
    assert settings.host == "0.0.0.0"


def test_only_edge_settings_in_the_environment(unit: Unit) -> None:
    known = set(manifests.settings_env_names())
    env = unit_environment(unit)
    env.update(manifests.parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8")))
    used = {name for name in env if name.startswith("PROXIMA_")}
    assert used <= known, f"not settings of the edge: {used - known}"
    assert service(unit, "EnvironmentFile").lstrip("-") == "/etc/proxima/edge.env"


def test_the_edge_writes_only_inside_its_state_directory(unit: Unit) -> None:
    settings = unit_settings(unit)
    assert service(unit, "ProtectSystem") == "strict"
    directories = state_directories(unit)
    for path in (settings.spool_dir, settings.bundle_cache_dir):
        assert any(path.is_relative_to(d) for d in directories), f"{path} is not writable"


def test_runs_unprivileged_restarts_and_is_hardened(unit: Unit) -> None:
    assert service(unit, "User") not in ("", "root", "0")
    assert service(unit, "Restart") == "on-failure"
    for key, value in HARDENING.items():
        assert service(unit, key) == value, key


def test_stop_timeout_outlasts_the_drain(unit: Unit) -> None:
    settings = unit_settings(unit)
    assert seconds(service(unit, "TimeoutStopSec")) > DRAIN_FACTOR * settings.shutdown_timeout_s


def test_systemd_accepts_the_unit(tmp_path: Path, unit: Unit) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit is only parsed here")
    # verify also checks that ExecStart's program exists: point it at this environment's.
    program = exec_words(unit)[0]
    installed = Path(sys.executable).parent / "proxima"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(program, str(installed)))
    checked = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and bad specifiers are only warnings: any output is a finding.
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), (
        checked.stdout + checked.stderr
    )
