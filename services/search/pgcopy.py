"""Postgres binary COPY for the index's bulk paths, parsed and built with numpy.

Loading a million vectors row by row costs a Python object per row and a hex decode per bytea;
`COPY ... TO STDOUT (FORMAT binary)` streams fixed-size rows that numpy reads as one structured
array. Format: an 11-byte signature, int32 flags, int32 extension length (+ extension), then
per row an int16 field count and per field an int32 length and the bytes; an int16 -1 ends it.
All integers are big-endian; our vectors are little-endian float32 bytes as stored.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
# parse whatever has arrived once this many bytes are buffered
_PARSE_EVERY = 32 * 2**20


def _id_vector_dtype(dim: int) -> np.dtype[Any]:
    return np.dtype([("n", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                     ("v", "<f4", (dim,))])


_ID_INT_DTYPE = np.dtype([("n", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                          ("c", ">i4")])


class _RowSink:
    """A file-like target for copy_expert that parses fixed-size rows as they arrive, into
    (ids, values) parts: the raw stream is never held whole."""

    def __init__(self, dtype: np.dtype[Any], value: str) -> None:
        self.dtype, self.value = dtype, value
        self._buf = bytearray()
        self._header_done = False
        self.ids: list[NDArray[np.int64]] = []
        self.values: list[NDArray[Any]] = []

    def write(self, data: bytes | memoryview) -> int:
        self._buf += data
        if len(self._buf) >= _PARSE_EVERY:
            self._parse()
        return len(data)

    def _parse(self) -> None:
        buf = self._buf
        if not self._header_done:
            if len(buf) < 19:
                return
            if bytes(buf[:11]) != SIGNATURE:
                raise ValueError("not a binary COPY stream")
            ext = int.from_bytes(buf[15:19], "big")
            del buf[: 19 + ext]
            self._header_done = True
        n = len(buf) // self.dtype.itemsize
        if not n:
            return
        rows = np.frombuffer(buf, dtype=self.dtype, count=n)
        if not ((rows["n"] == 2).all() and (rows["l1"] == 8).all()
                and (rows["l2"] == self.dtype[self.value].itemsize).all()):
            raise ValueError("unexpected row layout in binary COPY (a NULL?)")
        self.ids.append(rows["id"].astype(np.int64))
        self.values.append(np.ascontiguousarray(rows[self.value]))
        del rows  # release the buffer export before resizing it
        del buf[: n * self.dtype.itemsize]

    def finish(self) -> tuple[NDArray[np.int64], NDArray[Any]]:
        self._parse()
        if bytes(self._buf) not in (b"", _TRAILER):
            raise ValueError(f"binary COPY rows are not {self.dtype.itemsize} bytes each "
                             "(a NULL or a vector of another size?)")
        if not self.ids:
            shape = (0, *self.dtype[self.value].shape)
            return np.zeros(0, dtype=np.int64), np.zeros(shape, dtype=self.dtype[self.value].base)
        ids, values = self.ids, self.values
        self.ids, self.values = [], []
        if len(ids) == 1:
            return ids[0], values[0]
        return np.concatenate(ids), np.concatenate(values)


def copy_rows_out(cursor: Any, query: str, dim: int | None
                  ) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Run `COPY (SELECT id, x ...) TO STDOUT (FORMAT binary)`: (ids, vectors or ints).

    With `dim`, x is a bytea of `dim` float32s and the second array is (n, dim) float32;
    without, x is an int4 and the second array is int64.
    """
    sink = _RowSink(_id_vector_dtype(dim) if dim is not None else _ID_INT_DTYPE,
                    "v" if dim is not None else "c")
    cursor.copy_expert(query, sink)
    ids, values = sink.finish()
    if dim is not None:
        return ids, values.astype(np.float32, copy=False)
    return ids, values.astype(np.int64)


def copy_pairs_in(cursor: Any, table: str, columns: tuple[str, str, str], first: int,
                  ids: NDArray[np.int64], values: NDArray[np.int64]) -> None:
    """COPY rows (first: int8, id: int8, value: int4) into `table` in one binary stream."""
    dtype = np.dtype([("n", ">i2"), ("l1", ">i4"), ("a", ">i8"), ("l2", ">i4"), ("b", ">i8"),
                      ("l3", ">i4"), ("c", ">i4")])
    rows = np.empty(ids.shape[0], dtype=dtype)
    rows["n"], rows["l1"], rows["a"] = 3, 8, first
    rows["l2"], rows["b"], rows["l3"], rows["c"] = 8, ids, 4, values
    stream = io.BytesIO(_HEADER + rows.tobytes() + _TRAILER)
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT binary)",
                       stream)
