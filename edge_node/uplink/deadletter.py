"""The dead-letter file: spool records JetStream refuses for good, kept beside the spool.

One refused record must not hold the spool back for ever: the publisher moves it here
(one JSON line: spool sequence, event id, why, when, the record base64-encoded) and the
batch goes on. The file is bounded: past ``max_bytes`` a refused record is only counted
and logged, never written, so a stream of poisoned records cannot fill the disk.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Final

log = logging.getLogger("proxima.edge.publisher")

DEAD_LETTER_NAME: Final = "dead-letter.jsonl"
DEFAULT_MAX_BYTES: Final = 64 << 20


class DeadLetters:
    """Appends refused records to ``directory/dead-letter.jsonl``, up to ``max_bytes``."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.path = Path(directory) / DEAD_LETTER_NAME
        self.max_bytes = max_bytes
        self.written = 0  # records written to the file since this process started
        self.dropped = 0  # records refused for good but not written: the file was full

    @property
    def quarantined(self) -> int:
        return self.written + self.dropped

    def put(self, seq: int, event_id: str, payload: bytes, reason: str) -> None:
        """Quarantines one record; an OSError is logged and the record counted as dropped."""
        line = (
            json.dumps(
                {
                    "seq": seq,
                    "event_id": event_id,
                    "reason": reason[:500],
                    "at_ms": int(time.time() * 1000),
                    "record": base64.b64encode(payload).decode("ascii"),
                },
                separators=(",", ":"),
            )
            + "\n"
        ).encode("utf-8")
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(line) > self.max_bytes:
                self.dropped += 1
                log.error(
                    "publisher: dead-letter file %s is full (%d bytes): record %d (%s) dropped: %s",
                    self.path, size, seq, event_id, reason,
                )  # fmt: skip
                return
            with self.path.open("ab") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            self.dropped += 1
            log.error(
                "publisher: cannot write dead-letter file %s (errno %s): record %d dropped: %s",
                self.path, exc.errno, seq, reason,
            )  # fmt: skip
            return
        self.written += 1
        log.error(
            "publisher: JetStream refused record %d (%s) for good: %s; moved to %s",
            seq, event_id, reason, self.path,
        )  # fmt: skip
