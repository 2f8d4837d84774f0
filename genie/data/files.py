"""Crash-safe file writing: atomic JSON, and .npy arrays streamed row by row both ways."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_NPY_HEADER_BYTES = 128  # fixed, so the real shape can be written over the placeholder at close


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to `path.tmp`, sync, then rename: readers see the old or the new, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    meta = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    text = repr(meta).encode("latin1")
    pad = _NPY_HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {_NPY_HEADER_BYTES}-byte .npy header")
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


class NpyStreamWriter:
    """Append rows of a fixed shape to an .npy file without holding them in memory.

    The file is written as `path.tmp` with a placeholder header; `close()` writes the final row
    count into the header and renames the file, so an interrupted write never looks complete.
    """

    def __init__(self, path: str | Path, row_shape: tuple[int, ...], dtype=np.uint8):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.row_shape, self.dtype = tuple(row_shape), np.dtype(dtype)
        self.rows = 0
        self.file = open(self.tmp, "wb")  # noqa: SIM115 -- held open across write() calls
        self.file.write(_npy_header((0, *self.row_shape), self.dtype))

    def write(self, rows: np.ndarray) -> None:
        """Write one row (shape == row_shape) or a batch of rows."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape == self.row_shape:
            rows = rows[None]
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} written to a {self.row_shape} file")
        self.file.write(rows.data)
        self.rows += len(rows)

    def close(self) -> int:
        """Finish the file and move it into place; returns the number of rows."""
        self.file.seek(0)
        self.file.write(_npy_header((self.rows, *self.row_shape), self.dtype))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.tmp.replace(self.path)
        return self.rows

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def read_rows(path: str | Path, start: int, count: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """Rows start..start+count of an .npy file written by NpyStreamWriter, `chunk` at a time.

    Plain reads rather than a memory map: mapped pages count against the process's memory,
    and a long video would be mapped whole.
    """
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        f.seek(_NPY_HEADER_BYTES + start * row_bytes)
        for done in range(0, count, chunk):
            n = min(chunk, count - done)
            yield np.frombuffer(f.read(n * row_bytes), dtype).reshape(n, *shape[1:])
