"""Read the records of an offline W&B run (``run-*.wandb``) without network or a W&B account.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type FULL/FIRST/MIDDLE/LAST);
a record is a serialized ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding at the end of the file
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(pending)
        records.append(rec)
        pending = b""
    return records


def inspect(path: str | Path, summary: bool = False):
    """W&B's own offline reader (``wandb leet inspect --json``) on a ``.wandb`` file or run folder:
    the list of records, or with ``summary`` one object with state, config, summary and tags."""
    import json
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(exe), "leet", "inspect", "--json", *(["--summary"] if summary else []), str(path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out) if summary else [json.loads(line) for line in out.splitlines() if line.strip()]


def history(path: str | Path) -> list[dict]:
    """The history rows of an offline run, in the order they were logged."""
    return [r["history"]["item"] for r in inspect(path) if r.get("type") == "history"]
