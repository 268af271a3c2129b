"""deploy/edge/nats: the configs parse in the real nats-server, with what they promise."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.nats_topology import (
    CENTRAL_CONF,
    CENTRAL_REWRITES,
    LEAF_CONF,
    LEAF_REWRITES,
    central_domain,
    config_code,
    env_with,
    nats_server_binary,
    placeholder_env,
    rewrite_config,
    variables_in,
)

CONFIGS = [CENTRAL_CONF, LEAF_CONF]


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(path)],
        env=env_with(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def documented_variables(text: str) -> set[str]:
    """Variables listed in the config's comments (``#   NATS_NAME   what it is``)."""
    return set(re.findall(r"^#\s+(NATS_[A-Z0-9_]+)\s", text, flags=re.MULTILINE))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid_for_nats_server(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    checked = check_config(path, placeholder_env(text))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_variable_the_config_reads_is_documented_and_required(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    variables = variables_in(text)
    assert variables, "no values come from the environment"
    assert documented_variables(text) == variables
    for missing in sorted(variables):
        env = placeholder_env(text)
        del env[missing]
        checked = check_config(path, env)
        assert checked.returncode != 0
        assert missing in checked.stdout + checked.stderr


def test_a_typo_in_a_config_is_caught(tmp_path: Path) -> None:
    text = LEAF_CONF.read_text(encoding="utf-8").replace("max_payload", "max_paylod")
    broken = tmp_path / "leaf-edge.conf"
    broken.write_text(text, encoding="utf-8")
    checked = check_config(broken, placeholder_env(text))
    assert checked.returncode != 0
    assert "max_paylod" in checked.stdout + checked.stderr


def test_leaf_node_runs_no_jetstream_and_maps_the_api_to_central() -> None:
    code = config_code(LEAF_CONF.read_text(encoding="utf-8"))
    assert not re.search(r"^\s*jetstream\b", code, flags=re.MULTILINE)
    assert re.search(r"^\s*remotes\s*:", code, flags=re.MULTILINE)
    # The edge code calls the plain $JS.API; across a leaf connection only the
    # domain-qualified API of central's JetStream passes.
    mapping = re.findall(r'"(\$JS\.API\.>)"\s*:\s*"([^"]+)"', code)
    assert mapping == [("$JS.API.>", f"$JS.{central_domain()}.API.>")]


def test_central_runs_jetstream_in_a_cluster_with_a_leafnode_port() -> None:
    assert central_domain()
    # The rewrite the integration test applies finds each of these exactly once.
    rewritten = rewrite_config(
        CENTRAL_CONF.read_text(encoding="utf-8"),
        dict.fromkeys(CENTRAL_REWRITES, "# moved"),
        {("cluster", "routes"): ["nats-route://127.0.0.1:1"]},
    )
    assert rewritten.count("# moved") == len(CENTRAL_REWRITES)
    assert "nats-route://nats-central" not in rewritten


def test_the_rewrite_refuses_a_config_it_does_not_recognise() -> None:
    text = LEAF_CONF.read_text(encoding="utf-8").replace("http_port: 8222", "")
    with pytest.raises(AssertionError, match="http_port"):
        rewrite_config(text, dict.fromkeys(LEAF_REWRITES, "# moved"))
