from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from central.cli import main
from central.datasets import read_log
from devtools.loggen import HEADER, GeneratorConfig, generate_file
from protocol.bundle import inspect_bundle
from protocol.keys import PRIVATE_KEY_FILENAME, PUBLIC_KEY_FILENAME, load_private_key

# Unset, so that a developer's own settings never leak into a test.
CLEAN_ENV: dict[str, str | None] = {"PROXIMA_SIGNING_KEY": None, "PROXIMA_PUBLIC_KEY": None}
RESULT_NAMES = [
    "popularity",
    "item-knn",
    "session-knn",
    "covis",
    "proxima-fp32",
    "proxima-int8",
]


def run(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], env={**CLEAN_ENV, **(env or {})})


def ok(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    result = run(*args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def failed(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    result = run(*args, env=env)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@dataclass(frozen=True)
class Workspace:
    directory: Path
    keys: Path
    log: Path
    bundle: Path
    train_output: str

    @property
    def private_key(self) -> Path:
        return self.keys / PRIVATE_KEY_FILENAME

    @property
    def public_key(self) -> Path:
        return self.keys / PUBLIC_KEY_FILENAME


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    directory = tmp_path_factory.mktemp("cli")
    keys = directory / "keys"
    ok("keys", "generate", "--out", keys)
    log = directory / "log.csv"
    generate_file(log, GeneratorConfig(sessions=300, items=400, categories=10, seed=3))
    bundle = directory / "model.bundle"
    trained = ok("train", "--data", log, "--format", "csv", "--out", bundle,
                 "--signing-key", keys / PRIVATE_KEY_FILENAME, "--version", "17")
    return Workspace(directory, keys, log, bundle, trained.stdout)


# --- keys ------------------------------------------------------------------------------------


def test_keys_generate_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    result = ok("keys", "generate", "--out", tmp_path / "keys")
    private = tmp_path / "keys" / PRIVATE_KEY_FILENAME
    public = tmp_path / "keys" / PUBLIC_KEY_FILENAME
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.is_file()
    load_private_key(private.read_bytes())
    assert str(private) in result.output
    assert str(public) in result.output


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    ok("keys", "generate", "--out", tmp_path)
    before = (tmp_path / PRIVATE_KEY_FILENAME).read_bytes()
    result = failed("keys", "generate", "--out", tmp_path)
    assert "already exists" in result.stderr
    assert (tmp_path / PRIVATE_KEY_FILENAME).read_bytes() == before

    ok("keys", "generate", "--out", tmp_path, "--force")
    assert (tmp_path / PRIVATE_KEY_FILENAME).read_bytes() != before
    assert stat.S_IMODE((tmp_path / PRIVATE_KEY_FILENAME).stat().st_mode) == 0o600


# --- train -----------------------------------------------------------------------------------


def test_train_writes_a_signed_bundle(workspace: Workspace) -> None:
    manifest = inspect_bundle(workspace.bundle.read_bytes())
    assert manifest.version == 17
    assert manifest.training["sessions"] == 300
    assert set(manifest.metrics["validation"]) == {"fp32", "int8"}


def test_train_reports_what_it_wrote(workspace: Workspace) -> None:
    assert f"wrote {workspace.bundle}" in workspace.train_output
    events = read_log(workspace.log, "csv")[0].n_events
    assert f"from {events:,} events" in workspace.train_output
    assert "validation fp32: HR@20" in workspace.train_output
    assert "validation int8: HR@20" in workspace.train_output


def test_train_without_a_signing_key_stops_before_training(workspace: Workspace,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "never.bundle"
    result = failed("train", "--data", workspace.log, "--format", "csv", "--out", out)
    assert "no signing key" in result.stderr
    assert "--signing-key" in result.stderr
    assert not out.exists()


def test_train_refuses_a_public_key_as_signing_key(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "never.bundle"
    result = failed("train", "--data", workspace.log, "--format", "csv", "--out", out,
                    "--signing-key", workspace.public_key)
    assert "public key" in result.stderr
    assert not out.exists()


def with_a_bad_row(source: Path, target: Path) -> int:
    """Copies ``source`` with a malformed timestamp on a new line; returns that line."""
    lines = source.read_text().splitlines(keepends=True)
    bad_line = 6
    lines.insert(bad_line - 1, "s-bad,u1,i1,not-a-time,view,books,3.00\n")
    target.write_text("".join(lines))
    return bad_line


def test_a_malformed_row_is_reported_with_its_line(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    line = with_a_bad_row(workspace.log, data)
    result = failed("train", "--data", data, "--format", "csv", "--out", tmp_path / "x.bundle",
                    "--signing-key", workspace.private_key)
    assert f"{data}:{line}:" in result.stderr
    assert "timestamp" in result.stderr
    assert not (tmp_path / "x.bundle").exists()


def test_skip_bad_rows_counts_what_it_skipped(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    with_a_bad_row(workspace.log, data)
    rows = len(data.read_text().splitlines()) - 1
    # The signing key from the environment this time.
    result = ok("train", "--data", data, "--format", "csv", "--out", tmp_path / "x.bundle",
                "--skip-bad-rows", env={"PROXIMA_SIGNING_KEY": str(workspace.private_key)})
    assert f"skipped 1 malformed rows of {rows}" in result.stderr
    assert (tmp_path / "x.bundle").is_file()


# --- bundle inspect / verify -----------------------------------------------------------------


def test_bundle_inspect_shows_the_manifest(workspace: Workspace) -> None:
    result = ok("bundle", "inspect", workspace.bundle)
    assert "bundle version 17" in result.stdout
    assert "validation fp32: HR@20" in result.stdout
    assert "ranker.fp32.onnx" in result.stdout
    assert "tables/covis_indices.npy" in result.stdout


def test_bundle_inspect_json_is_the_manifest(workspace: Workspace) -> None:
    result = ok("bundle", "inspect", workspace.bundle, "--json")
    manifest = json.loads(result.stdout)
    assert manifest == inspect_bundle(workspace.bundle.read_bytes()).to_dict()


def test_bundle_verify_accepts_a_good_bundle(workspace: Workspace) -> None:
    result = ok("bundle", "verify", workspace.bundle, "--public-key", workspace.public_key)
    assert result.stdout.startswith("ok: bundle version 17 verifies")


def test_bundle_verify_reads_the_public_key_from_the_environment(workspace: Workspace) -> None:
    ok("bundle", "verify", workspace.bundle,
       env={"PROXIMA_PUBLIC_KEY": str(workspace.public_key)})


def stored_part_offset(bundle: bytes, member: str) -> tuple[int, int]:
    """Where a member's stored (compressed) bytes start in the archive, and how many."""
    info = zipfile.ZipFile(io.BytesIO(bundle)).getinfo(member)
    name_length, extra_length = struct.unpack_from("<HH", bundle, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def flip_stored_byte(bundle: bytes) -> bytes:
    start, size = stored_part_offset(bundle, "parts/tables/pop_all.npy")
    damaged = bytearray(bundle)
    damaged[start + size // 2] ^= 0x01
    return bytes(damaged)


def flip_part_byte_and_repack(bundle: bytes) -> bytes:
    """The same archive with one part's content changed and its ZIP checksum made right."""
    source = zipfile.ZipFile(io.BytesIO(bundle))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = bytearray(source.read(info.filename))
            if info.filename == "parts/tables/pop_all.npy":
                data[-1] ^= 0x01
            target.writestr(info, bytes(data))
    return out.getvalue()


def truncate(bundle: bytes) -> bytes:
    return bundle[: len(bundle) // 2]


@pytest.mark.parametrize(
    ("damage", "check"),
    [
        (flip_stored_byte, "tables/pop_all.npy"),
        (flip_part_byte_and_repack, "sha256"),
        (truncate, "ZIP"),
    ],
    ids=["flipped-stored-byte", "flipped-part-byte", "truncated"],
)
def test_bundle_verify_names_the_failed_check(
    workspace: Workspace, tmp_path: Path, damage: Callable[[bytes], bytes], check: str
) -> None:
    damaged = tmp_path / "damaged.bundle"
    damaged.write_bytes(damage(workspace.bundle.read_bytes()))
    result = failed("bundle", "verify", damaged, "--public-key", workspace.public_key)
    assert result.stderr.startswith("error: ")
    assert check in result.stderr


def test_bundle_verify_refuses_a_part_with_the_wrong_hash(workspace: Workspace,
                                                          tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.bundle"
    damaged.write_bytes(flip_part_byte_and_repack(workspace.bundle.read_bytes()))
    result = failed("bundle", "verify", damaged, "--public-key", workspace.public_key)
    assert "tables/pop_all.npy" in result.stderr
    assert "part_hash_mismatch" in result.stderr


def test_bundle_verify_refuses_another_key(workspace: Workspace, tmp_path: Path) -> None:
    ok("keys", "generate", "--out", tmp_path)
    result = failed("bundle", "verify", workspace.bundle,
                    "--public-key", tmp_path / PUBLIC_KEY_FILENAME)
    assert "key" in result.stderr
    assert "key_mismatch" in result.stderr or "signature" in result.stderr


def test_bundle_verify_needs_a_public_key(workspace: Workspace) -> None:
    result = failed("bundle", "verify", workspace.bundle)
    assert "--public-key" in result.output


# --- generate --------------------------------------------------------------------------------


def test_generate_writes_a_log_that_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "f.csv"
    result = ok("generate", "--sessions", "50", "--out", out)
    assert out.read_text().startswith(HEADER)
    log, stats = read_log(out, "csv")
    assert len(set(log.session.tolist())) == 50
    assert stats.rows_skipped == 0
    assert f"{log.n_events:,} events in 50 sessions" in result.stderr


def test_generate_writes_to_standard_output(tmp_path: Path) -> None:
    result = ok("generate", "--sessions", "3", "--seed", "2")
    assert result.stdout.startswith(HEADER)
    assert result.stdout == ok("generate", "--sessions", "3", "--seed", "2").stdout


# --- evaluate --------------------------------------------------------------------------------


def evaluation(result: Result) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


def test_evaluate_json_prints_one_object(tmp_path: Path) -> None:
    data = tmp_path / "eval.csv"
    generate_file(data, GeneratorConfig(sessions=400, items=300, categories=10, seed=4))
    report = evaluation(ok("evaluate", "--data", data, "--format", "csv", "--json"))
    assert set(report) == {"dataset", "train_events", "test_sessions", "predictions", "results"}
    assert report["dataset"] == "eval.csv"
    assert report["train_events"] > 0
    assert report["test_sessions"] > 0
    assert report["predictions"] >= report["test_sessions"]
    assert [r["name"] for r in report["results"]] == RESULT_NAMES
    for figures in report["results"]:
        assert 0.0 <= figures["mrr_at_20"] <= figures["hr_at_20"] <= 1.0


@pytest.mark.slow
def test_proxima_beats_session_knn_on_diginetica(shared_file: Callable[[str], Path]) -> None:
    data = shared_file("diginetica-sample.csv")
    report = evaluation(ok("evaluate", "--data", data, "--format", "diginetica", "--json"))
    assert report["predictions"] == 102
    by_name = {r["name"]: r for r in report["results"]}
    assert list(by_name) == RESULT_NAMES
    proxima, session_knn = by_name["proxima-fp32"], by_name["session-knn"]
    assert proxima["hr_at_20"] >= session_knn["hr_at_20"]
    assert proxima["mrr_at_20"] >= session_knn["mrr_at_20"]
