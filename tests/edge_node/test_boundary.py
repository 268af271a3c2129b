"""The edge's package boundary: importing the app and its command loads nothing central.

The edge image ships ``protocol``, ``runtime`` and ``edge_node`` only, without scikit-learn,
skl2onnx or aiokafka (tests/deploy/test_dockerfile.py); an import of any of them from the
edge would fail there, so it must fail here first. This checks what a real interpreter
loads, lazy imports at module level included; the Dockerfile test checks the source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("central", "sklearn", "skl2onnx", "aiokafka", "devtools", "model_export")
PROBE = (
    "import edge_node.app, edge_node.cli; import sys, json; print(json.dumps(sorted(sys.modules)))"
)


def loaded_modules(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def test_the_edge_app_and_cli_import_nothing_of_central_nor_its_libraries() -> None:
    modules = loaded_modules(PROBE)

    assert "edge_node.app" in modules and "edge_node.cli" in modules
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert leaked == []


def test_the_edge_help_loads_no_central_library() -> None:
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from edge_node.cli import edge\n"
        "result = CliRunner().invoke(edge, ['serve', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    modules = loaded_modules(code)

    assert [m for m in modules if m.split(".")[0] in FORBIDDEN] == []
