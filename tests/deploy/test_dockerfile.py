"""deploy/edge/Dockerfile against the code: stages, contents, user, settings, command, health.

The image holds what the edge imports and nothing else: the first-party packages reached
from ``edge_node.app`` and ``edge_node.cli`` (read from the source by
:mod:`tests.deploy.edge_imports`), installed with the project's base dependencies, which
must provide every third-party module those packages import, and leave out the central
services' scikit-learn, skl2onnx and aiokafka.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edge_node.app import ROUTES
from tests.deploy import manifests
from tests.deploy.conftest import EdgeFromEnv
from tests.deploy.edge_imports import edge_imports, first_party_packages
from tests.deploy.manifests import Stage, pyproject
from tests.servers import pick_free_port

REQUIRED = {"PROXIMA_REGION": "eu", "PROXIMA_NODE": "n1", "PROXIMA_PUBLIC_KEY": "/k/signing.pub"}
CENTRAL_ONLY = ("scikit-learn", "skl2onnx", "aiokafka")


def requirements(names: list[str]) -> dict[str, Requirement]:
    parsed = (Requirement(name) for name in names)
    return {canonicalize_name(r.name): r for r in parsed}


def base_dependencies() -> dict[str, Requirement]:
    return requirements(pyproject()["project"]["dependencies"])


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide the top-level module ``module``."""
    found = importlib.metadata.packages_distributions().get(module)
    if not found:
        raise AssertionError(f"no installed distribution provides {module!r}")
    return {canonicalize_name(d) for d in found}


def global_args(text: str) -> dict[str, str]:
    head = text.split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", head, flags=re.MULTILINE))


def runtime_user(stage: Stage) -> str:
    user = stage.last("USER")
    assert user is not None, "the runtime stage sets no USER, so it runs as root"
    return user.value.split(":")[0]


def test_builder_makes_a_wheel_into_a_venv_that_the_slim_runtime_copies(
    dockerfile_stages: list[Stage],
) -> None:
    text = manifests.DOCKERFILE.read_text(encoding="utf-8")
    assert len(dockerfile_stages) >= 2
    builder, runtime = dockerfile_stages[0], dockerfile_stages[-1]
    args = global_args(text)
    bases = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], s.base) for s in (builder, runtime)}
    for base in bases:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    build = " ".join(i.value for i in builder.all("RUN"))
    venv = re.search(r"python -m venv (\S+)", build)
    assert venv is not None, "the builder creates no virtual environment"
    assert re.search(r"pip wheel .*--wheel-dir (\S+) \.", build), "the builder builds no wheel"
    assert f"{venv.group(1)}/bin/pip install /wheels/proxima-" in build
    copied = [i.value.split() for i in runtime.all("COPY")]
    assert [f"--from={builder.name}", venv.group(1), venv.group(1)] in copied
    assert f"{venv.group(1)}/bin" in manifests.stage_env(runtime)["PATH"].split(":")


def test_the_build_copies_exactly_the_packages_the_edge_imports(
    dockerfile_stages: list[Stage],
) -> None:
    needed = edge_imports().packages
    assert {"protocol", "runtime", "edge_node"} <= needed
    assert not needed & {"central", "model_export", "devtools"}
    copied = {source.rstrip("/") for source in manifests.copy_sources(dockerfile_stages[0])}
    packages = copied & first_party_packages()
    assert packages == needed, f"missing: {needed - packages}, not needed: {packages - needed}"
    assert copied - packages == {"pyproject.toml", "README.md"}  # the build reads the readme
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert needed <= {p.rstrip("*") for p in patterns}, "the wheel would leave a package out"


def test_the_edge_is_installed_with_the_base_dependencies_only(
    dockerfile_stages: list[Stage],
) -> None:
    build = " ".join(i.value for i in dockerfile_stages[0].all("RUN"))
    installs = re.findall(r"/bin/pip install (\S+)", build)
    wheels = [target for target in installs if target.startswith("/wheels/")]
    assert wheels == ["/wheels/proxima-*.whl"], "the wheel is installed with an extra"


def test_the_base_dependencies_provide_every_module_the_edge_imports() -> None:
    base = base_dependencies()
    third_party = edge_imports().third_party
    assert {"starlette", "onnxruntime", "nats", "redis", "numpy"} <= third_party
    for module in sorted(third_party):
        assert distributions_of(module) & set(base), f"{module}: no base dependency provides it"
    # uvicorn runs with uvloop, httptools and the websockets protocol (edge_node.server)
    assert "standard" in base["uvicorn"].extras


def test_the_base_dependencies_leave_the_central_services_out() -> None:
    base = base_dependencies()
    central = requirements(pyproject()["project"]["optional-dependencies"]["central"])
    for name in CENTRAL_ONLY:
        assert canonicalize_name(name) not in base, f"{name} is a base dependency"
        assert canonicalize_name(name) in central, f"{name} is not in the central extra"
    assert not set(central) & set(base)
    for module in ("sklearn", "skl2onnx", "aiokafka"):
        assert module not in edge_imports().third_party


def test_the_dev_extra_installs_everything_the_central_extra_does() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    central, dev = requirements(extras["central"]), requirements(extras["dev"])
    assert set(central) <= set(dev), f"not in dev: {set(central) - set(dev)}"


def test_build_context_keeps_every_file_the_build_copies(dockerfile_stages: list[Stage]) -> None:
    ignore = manifests.EDGE_DEPLOY / "Dockerfile.dockerignore"
    patterns = manifests.read_dockerignore(ignore)
    sources = manifests.copy_sources(dockerfile_stages[0])
    tracked = subprocess.run(
        ["git", "ls-files", "--", *sources],
        cwd=manifests.REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    python_files = [path for path in tracked if path.endswith(".py")]
    assert len(python_files) > 20
    dropped = [path for path in tracked if manifests.dockerignore_excludes(patterns, path)]
    assert dropped == []
    for unwanted in (".venv/bin/python", "tests/conftest.py", "edge_node/__pycache__/app.pyc"):
        assert manifests.dockerignore_excludes(patterns, unwanted), unwanted


def test_runtime_runs_as_a_non_root_user_it_creates(dockerfile_stages: list[Stage]) -> None:
    runtime = dockerfile_stages[-1]
    user = runtime_user(runtime)
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    created = " ".join(i.value for i in runtime.all("RUN"))
    assert re.search(rf"useradd .*--uid {user}\b", created), f"no user with uid {user} is made"


def test_entrypoint_runs_the_edge_with_flags_that_exist(dockerfile_stages: list[Stage]) -> None:
    runtime = dockerfile_stages[-1]
    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint is not None
    command = manifests.exec_form(entrypoint.value)
    cmd = runtime.last("CMD")
    command += manifests.exec_form(cmd.value) if cmd is not None else []
    assert command[0] == manifests.EDGE_SCRIPT
    assert pyproject()["project"]["scripts"][command[0]] == "edge_node.cli:main"
    root = manifests.script_command(command[0])
    serve, rest = manifests.resolve_command(command[1:], root)
    assert serve.name == "serve" and command[1] == "serve"
    alias, _ = manifests.resolve_command(list(manifests.EDGE_COMMAND))
    assert alias is serve, "proxima edge serve is not the same command"
    unknown = set(manifests.flags_in(rest)) - manifests.option_names(serve)
    assert not unknown, f"flags proxima-edge serve does not take: {unknown}"
    manifests.parse_edge_args(command[1:], root)
    build = " ".join(i.value for i in dockerfile_stages[0].all("RUN"))
    assert f"/bin/{command[0]} serve --help" in build, "the builder does not try the command"


def test_image_environment_names_only_edge_settings(image_env: dict[str, str]) -> None:
    known = manifests.settings_env_names()
    used = {name for name in image_env if name.startswith("PROXIMA_")}
    assert used, "the image sets no PROXIMA_* variables"
    assert used <= set(known), f"not settings of the edge: {used - set(known)}"


def test_image_listens_on_all_addresses_on_the_exposed_port(
    dockerfile_stages: list[Stage], image_env: dict[str, str]
) -> None:
    settings = manifests.load_edge_settings(env={**image_env, **REQUIRED})
    exposed = [i.value for i in dockerfile_stages[-1].all("EXPOSE")]
    assert exposed == [str(settings.port)]
    assert settings.host == "0.0.0.0"


def test_spool_and_bundle_cache_are_volumes_the_user_owns(
    dockerfile_stages: list[Stage], image_env: dict[str, str]
) -> None:
    runtime = dockerfile_stages[-1]
    settings = manifests.load_edge_settings(env={**image_env, **REQUIRED})
    volumes = {v for i in runtime.all("VOLUME") for v in manifests.exec_form(i.value)}
    assert {str(settings.spool_dir), str(settings.bundle_cache_dir)} <= volumes
    runs = " ".join(i.value for i in runtime.all("RUN"))
    owned = re.findall(r"chown -R proxima:proxima (\S+)", runs)
    for directory in (settings.spool_dir, settings.bundle_cache_dir):
        assert any(directory.is_relative_to(Path(o)) for o in owned), f"{directory} not chowned"
        assert str(directory) in runs, f"{directory} is not created in the image"


def test_healthcheck_probes_the_liveness_route(dockerfile_stages: list[Stage]) -> None:
    check = manifests.healthcheck(dockerfile_stages[-1])
    assert check is not None, "the runtime stage has no HEALTHCHECK"
    assert check.command[:2] == ["python", "-c"], "the slim image has no curl"
    paths = re.findall(r"https?://[^/'\"]+(/[^'\"?]*)", check.command[2])
    assert paths == ["/healthz"]
    assert "/healthz" in {route.path for route in ROUTES}
    assert {"interval", "timeout", "start-period", "retries"} <= set(check.options)


@pytest.fixture
def healthcheck_command(dockerfile_stages: list[Stage]) -> list[str]:
    check = manifests.healthcheck(dockerfile_stages[-1])
    assert check is not None
    return [sys.executable, *check.command[1:]]


def test_healthcheck_passes_against_a_running_edge_and_fails_without_one(
    edge_from_env: EdgeFromEnv, image_env: dict[str, str], healthcheck_command: list[str]
) -> None:
    unused = f"nats://127.0.0.1:{pick_free_port()}"  # a bus nobody serves: no bundle yet
    edge = edge_from_env({**image_env, **REQUIRED}, nats_url=unused)
    port = str(edge.settings.port)
    passed = subprocess.run(
        healthcheck_command, env={"PROXIMA_PORT": port}, capture_output=True, timeout=20
    )
    assert passed.returncode == 0, passed.stderr.decode()
    edge.stop()
    failed = subprocess.run(
        healthcheck_command, env={"PROXIMA_PORT": port}, capture_output=True, timeout=20
    )
    assert failed.returncode != 0
