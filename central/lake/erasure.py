"""Erasing a person from the lake, as privacy law requires: the trainer's next run, the
outcome report and any later reader no longer see them.

``DELETE /v1/users/{id}`` at an edge records the erasure in the ``proxima-erasures`` KV
(key: the sha256 of the user id). Central applies it here: every lake file holding a row
of that user — or of any session in which the user appeared, so anonymous events before a
login go too — is rewritten without those rows, under the same name, in one commit of
:mod:`central.lake.commit` (the rewritten file replaces the old one by an atomic rename;
a crash before the commit point leaves the old file, after it the commit is finished by
recovery). The file keeps its offset range, so writers still resume where they did.

:class:`LakeEraser` (a service of ``proxima central run``) creates the bucket — only central
makes buckets — and applies every recorded erasure on a schedule; files written after an
erasure (events of that user still on their way through Kafka) are scanned again, so they
are erased too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from central.lake.commit import Stager, sync_file
from central.lake.errors import LakeError
from central.lake.layout import LakeLayout, open_lake
from central.lake.tables import open_checked, parquet_writer, read_checked, source_of, with_source
from protocol.subjects import ERASURES_BUCKET
from runtime.nats import NatsSettings
from runtime.service import LoopService
from runtime.supervisor import describe_error

log = logging.getLogger("proxima.central.lake")

ERASURE_HISTORY: Final = 1


@dataclass(frozen=True, slots=True)
class Erased:
    files: int  # files rewritten
    rows: int  # rows removed
    sessions: int  # sessions whose rows went


def files_holding(
    layout: LakeLayout, files: list[Path], users: Collection[str]
) -> dict[Path, set[str]]:
    """The files among ``files`` with rows of ``users``, and the sessions to remove from each:
    every session in which one of the users appeared, anywhere in ``files``."""
    if not files or not users:
        return {}
    db = duckdb.connect()
    try:
        db.read_parquet([str(path) for path in files], filename=True).create_view("lake")
        db.execute("CREATE TEMP TABLE erased (user_id VARCHAR)")
        db.executemany("INSERT INTO erased VALUES (?)", [[user] for user in users])
        rows = db.execute(
            """
            WITH sessions AS (
              SELECT DISTINCT session_id FROM lake WHERE user_id IN (SELECT user_id FROM erased)
            )
            SELECT DISTINCT filename, session_id FROM lake
            WHERE session_id IN (SELECT session_id FROM sessions)
            """
        ).fetchall()
    except duckdb.Error as exc:
        raise LakeError(f"finding the erased users' rows failed: {exc}") from exc
    finally:
        db.close()
    found: dict[Path, set[str]] = {}
    for filename, session in rows:
        found.setdefault(Path(filename), set()).add(str(session))
    return found


def erase_users(
    layout: LakeLayout, users: Collection[str], files: list[Path] | None = None
) -> Erased:
    """Removes every row of ``users`` (and of their sessions) from ``files`` (all by default)."""
    chosen = layout.data_files() if files is None else files
    targets = files_holding(layout, chosen, users)
    if not targets:
        return Erased(0, 0, 0)
    stager = Stager(layout)
    removed = 0
    sessions: set[str] = set()
    try:
        commit = stager.begin()
        try:
            for path, session_ids in sorted(targets.items()):
                table = read_checked(path)
                drop = pc.is_in(table.column("session_id"), value_set=pa.array(sorted(session_ids)))
                kept = table.filter(pc.invert(drop))
                removed += table.num_rows - kept.num_rows
                sessions |= session_ids
                source = source_of(path)
                if source is not None:
                    kept = with_source(kept, source)
                target = commit.path_for(path.parent.name.removeprefix("date="), path.name)
                writer = parquet_writer(target, kept.schema)
                try:
                    writer.write_table(kept)
                finally:
                    writer.close()
                sync_file(target)
                open_checked(target)  # what replaces a file must read back as a lake file
            commit.finish()  # same names, no removes: each rename replaces the old file
        except BaseException:
            commit.abandon()
            raise
    finally:
        stager.close()
    log.info("erased %d rows of %d sessions from %d files", removed, len(sessions), len(targets))
    return Erased(len(targets), removed, len(sessions))


async def erasures_kv(js: JetStreamContext) -> KeyValue:
    """The erasures bucket; central creates it (edges only write into it)."""
    try:
        return await js.key_value(ERASURES_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=ERASURES_BUCKET, history=ERASURE_HISTORY)


async def recorded_erasures(kv: KeyValue) -> set[str]:
    """Every user id an erasure was recorded for."""
    try:
        keys = await kv.keys()
    except (NoKeysError, NotFoundError):
        return set()
    users: set[str] = set()
    for key in keys:
        with contextlib.suppress(Exception):
            entry = await kv.get(key)
            user = json.loads(entry.value or b"{}").get("user_id")
            if isinstance(user, str) and user:
                users.add(user)
    return users


class LakeEraser(LoopService):
    """Applies the recorded erasures to the lake every ``interval_s``."""

    name = "lake-eraser"

    def __init__(self, nats: NatsSettings, lake_dir: Path, *, interval_s: float = 60.0) -> None:
        self.nats = nats
        self.lake_dir = lake_dir
        self.interval_s = interval_s
        self.erased_rows = 0
        self.passes = 0
        self._scanned: set[Path] = set()
        self._users: set[str] = set()
        super().__init__()

    def apply(self, users: set[str]) -> Erased:
        """Erases ``users`` from the files not yet scanned for them (all, when new users came)."""
        if not self.lake_dir.is_dir():
            return Erased(0, 0, 0)
        layout = open_lake(self.lake_dir)
        if users != self._users:
            self._users, self._scanned = set(users), set()
        files = [path for path in layout.data_files() if path not in self._scanned]
        erased = erase_users(layout, users, files)
        self._scanned.update(layout.data_files())
        self.erased_rows += erased.rows
        self.passes += 1
        return erased

    async def _run(self) -> None:
        import nats as nats_client

        while True:
            try:
                client = await nats_client.connect(**self.nats.connect_options())
                try:
                    users = await recorded_erasures(await erasures_kv(client.jetstream()))
                finally:
                    await client.close()
                if users:
                    await asyncio.to_thread(self.apply, users)
            except Exception as exc:  # the next pass tries again; the log says why
                log.warning("lake erasure pass failed: %s", describe_error(exc))
            await asyncio.sleep(self.interval_s)
