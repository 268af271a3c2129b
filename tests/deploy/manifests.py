"""Reading the files under ``deploy/edge`` the way their runtimes read them.

Dockerfile instructions (continuations joined, stages split at ``FROM``), Kubernetes
manifests (the resources ``kustomization.yaml`` lists), systemd units (sections of
repeated keys), and the edge's own view of settings and flags, taken from the code: the
fields of :class:`edge_node.config.EdgeSettings` and the parameters of the click command
behind ``proxima-edge serve`` (and its alias ``proxima edge serve``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from central.cli import main
from edge_node.config import ENV_PREFIX, EdgeSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
EDGE_DEPLOY = REPO_ROOT / "deploy" / "edge"
K8S_DIR = EDGE_DEPLOY / "k8s"
NATS_DIR = EDGE_DEPLOY / "nats"
SYSTEMD_DIR = EDGE_DEPLOY / "systemd"
DOCKERFILE = EDGE_DEPLOY / "Dockerfile"

EDGE_COMMAND = ("edge", "serve")  # under ``proxima``
EDGE_SCRIPT = "proxima-edge"  # the edge's own console script, whose ``serve`` is the same


# --- the edge's settings and flags, from the code ---------------------------------------------


def settings_env_names() -> dict[str, str]:
    """``PROXIMA_<FIELD>`` → field name, for every field the settings loader reads."""
    return {
        f"{ENV_PREFIX}{field.name.upper()}": field.name
        for field in dataclasses.fields(EdgeSettings)
    }


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def script_command(script: str) -> click.Command:
    """The click command behind a console script of ``pyproject.toml``: its target, or the
    one click group of the target's module when the target is a plain ``main()``."""
    module_name, _, attribute = pyproject()["project"]["scripts"][script].partition(":")
    module = importlib.import_module(module_name)
    target = getattr(module, attribute)
    if isinstance(target, click.Command):
        return target
    groups = [v for v in vars(module).values() if isinstance(v, click.Group)]
    if len(groups) != 1:
        raise AssertionError(f"{module_name} has {len(groups)} click groups, not one")
    return groups[0]


def resolve_command(
    words: list[str], root: click.Command = main
) -> tuple[click.Command, list[str]]:
    """The click command that ``proxima <words>`` (or ``root``'s script) runs, and the words
    left for it."""
    command: click.Command = root
    rest = list(words)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.get_command(click.Context(command), name)
        if sub is None:
            raise AssertionError(f"'{name}' is not a subcommand of '{command.name}'")
        command = sub
    return command, rest


def option_names(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def flags_in(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("-")]


def parse_edge_args(args: list[str], root: click.Command = main) -> dict[str, Any]:
    """Parses ``proxima`` (or ``root``'s) arguments with the real command; returns its
    parameters."""
    command, rest = resolve_command(args, root)
    context = command.make_context("proxima", rest)
    return dict(context.params)


def load_edge_settings(
    *, env: Mapping[str, str], file: Path | None = None, flags: Mapping[str, Any] | None = None
) -> EdgeSettings:
    return EdgeSettings.load(file=file, env=env, overrides=flags)


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile; instructions before the first ``FROM`` (``ARG``) are dropped."""
    stages: list[Stage] = []
    current: list[Instruction] = []
    base = name = None
    for instruction in _instructions(text):
        if instruction.keyword == "FROM":
            if base is not None:
                stages.append(Stage(base, name, tuple(current)))
            parts = instruction.value.split()
            base = parts[0]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            current = []
        elif base is not None:
            current.append(instruction)
    if base is not None:
        stages.append(Stage(base, name, tuple(current)))
    return stages


def _instructions(text: str) -> Iterator[Instruction]:
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped, as Docker does
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        yield Instruction(keyword.upper(), value.strip(), start)


def exec_form(value: str) -> list[str]:
    """A JSON-array (exec form) ``CMD``/``ENTRYPOINT``; shell form is refused."""
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
        raise AssertionError(f"not an exec-form array: {value}")
    return parsed


def stage_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.value):
            key, sep, value = word.partition("=")
            if not sep:
                raise AssertionError(f"line {instruction.line}: use ENV KEY=value, not {word!r}")
            env[key] = value
    return env


@dataclass(frozen=True)
class Healthcheck:
    options: dict[str, str]
    command: list[str]


def healthcheck(stage: Stage) -> Healthcheck | None:
    instruction = stage.last("HEALTHCHECK")
    if instruction is None:
        return None
    options_text, marker, command = instruction.value.partition("CMD ")
    if not marker:
        raise AssertionError(f"line {instruction.line}: HEALTHCHECK without CMD")
    options = dict(word[2:].split("=", 1) for word in options_text.split() if word.startswith("--"))
    return Healthcheck(options, exec_form(command.strip()))


def copy_sources(stage: Stage) -> list[str]:
    """Sources of the stage's ``COPY`` instructions from the build context."""
    sources: list[str] = []
    for instruction in stage.all("COPY"):
        words = [w for w in instruction.value.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in instruction.value.split()):
            continue
        sources.extend(words[:-1])
    return sources


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching pattern wins;
    a pattern matches a path or any of its parent directories)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        regex = _dockerignore_regex(body.strip().strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def read_dockerignore(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- Kubernetes -------------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return data


def k8s_resources() -> list[dict[str, Any]]:
    """Every document of every file that ``kustomization.yaml`` lists, in order."""
    documents: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        with (K8S_DIR / name).open(encoding="utf-8") as stream:
            documents.extend(doc for doc in yaml.safe_load_all(stream) if doc is not None)
    return documents


def find_resource(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind]
    if len(matches) != 1:
        raise AssertionError(f"expected one {kind}, found {len(matches)}")
    return matches[0]


def named(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise AssertionError(f"no {kind} named {name!r} among the manifests")


def edge_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if len(containers) != 1:
        raise AssertionError(f"expected one container in the edge pod, found {len(containers)}")
    container: dict[str, Any] = containers[0]
    return container


def container_env(
    resources: list[dict[str, Any]],
    container: dict[str, Any],
    *,
    image_env: Mapping[str, str],
    pod_name: str,
) -> dict[str, str]:
    """The environment the container starts with: the image's, then ``envFrom``, then ``env``
    (each later source wins, as in Kubernetes), with references resolved."""
    env = dict(image_env)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = named(resources, "ConfigMap", source["configMapRef"]["name"])
            env.update({k: str(v) for k, v in config_map.get("data", {}).items()})
        elif "secretRef" in source:
            env.update(secret_data(named(resources, "Secret", source["secretRef"]["name"])))
        else:
            raise AssertionError(f"unsupported envFrom source {source}")
    for entry in container.get("env", []):
        env[entry["name"]] = _env_value(resources, entry, pod_name)
    return env


def _env_value(resources: list[dict[str, Any]], entry: dict[str, Any], pod_name: str) -> str:
    if "value" in entry:
        return str(entry["value"])
    source = entry["valueFrom"]
    if "fieldRef" in source:
        path = source["fieldRef"]["fieldPath"]
        if path != "metadata.name":
            raise AssertionError(f"{entry['name']}: unexpected fieldPath {path}")
        return pod_name
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        data = secret_data(named(resources, "Secret", ref["name"]))
        if ref["key"] not in data:
            raise AssertionError(f"{entry['name']}: Secret {ref['name']} has no key {ref['key']}")
        return data[ref["key"]]
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return str(named(resources, "ConfigMap", ref["name"])["data"][ref["key"]])
    raise AssertionError(f"{entry['name']}: unsupported valueFrom {source}")


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    if secret.get("data"):
        raise AssertionError("keep the example Secret in stringData, readable and replaceable")
    return {k: str(v) for k, v in secret.get("stringData", {}).items()}


# --- systemd ----------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of ``(key, value)`` in order (keys repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None:
            raise AssertionError(f"setting outside a section: {line}")
        key, sep, value = line.partition("=")
        if not sep:
            raise AssertionError(f"not a key=value line: {line}")
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for k, value in unit.get(section, []) if k == key]


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a systemd EnvironmentFile (comments and blanks skipped)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise AssertionError(f"not a KEY=value line: {line}")
        env[key.strip()] = value.strip().strip('"')
    return env
