"""Query results as numpy arrays: a DuckDB query as an Arrow table, its columns as int64 or
float64 arrays read from the buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pyarrow as pa

    from devloop.analytics.query import Store

    Ints = npt.NDArray[np.int64]
    Floats = npt.NDArray[np.float64]


def arrow(store: Store, sql: str, params: Sequence[Any] = (), batch: int = 1 << 17) -> pa.Table:
    """The rows of ``sql`` as an Arrow table; a DuckDB error as a StoreError."""
    return store.db.arrow(sql, params, batch)


def ints(column: pa.ChunkedArray | pa.Array) -> Ints:
    """An integer (or timestamp) column without nulls as int64."""
    import numpy as np
    import pyarrow as pa

    values: Ints = _numbers(column, pa.int64(), np.int64, 0)
    return values


def floats(column: pa.ChunkedArray | pa.Array, null: float = 0.0) -> Floats:
    """A column of numbers as float64, ``null`` (default 0, a sum of nothing) for nulls."""
    import numpy as np
    import pyarrow as pa

    values: Floats = _numbers(column, pa.float64(), np.float64, null)
    return values


def epoch_us(column: pa.ChunkedArray | pa.Array) -> Ints:
    """A timestamp column as epoch microseconds."""
    import pyarrow as pa

    return ints(column.cast(pa.timestamp("us", "UTC")).cast(pa.int64()))


def _numbers(column: pa.ChunkedArray | pa.Array, kind: pa.DataType, dtype: Any, null: Any) -> Any:
    """``column`` cast to ``kind`` as a numpy array of ``dtype``, ``null`` for nulls. From the
    buffers: pyarrow's ``to_numpy`` imports pandas, which costs a third of a second."""
    import numpy as np
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if not len(chunk):
            continue
        chunk = chunk.cast(kind)
        if chunk.null_count:
            chunk = chunk.fill_null(pa.scalar(null, kind))
        data = np.frombuffer(chunk.buffers()[1], dtype=dtype)
        parts.append(data[chunk.offset : chunk.offset + len(chunk)])
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
