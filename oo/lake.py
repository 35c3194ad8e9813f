"""The lake: append-only Parquet datasets, partitioned by date, read through DuckDB.

Layout: ``<root>/<dataset>/dt=YYYY-MM-DD/part-<digest>.parquet``, one dataset per contract.

- **Atomic**: each file is written to ``*.parquet.tmp``, fsynced, then renamed into place; a writer
  killed midway leaves at most a ``.tmp`` file, which readers never see and the next writer sweeps.
- **Idempotent**: a write skips every record whose natural key (``Record.key_fields``) is already in
  its partition, and duplicates inside the batch, so writing the same batch twice leaves the same
  rows. Writers of one dataset are serialised by a file lock (one machine; on object storage the
  same layout needs a single writer per dataset).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_contracts import (
    Activation,
    DeadLetter,
    Decision,
    FeatureSkew,
    NotificationDelivery,
    QuarantinedRow,
    ReactionEvent,
    Record,
    RewardEvent,
    TipScore,
    TodoistCompletion,
    TodoistProject,
    TodoistRawPayload,
    TodoistTask,
    TrainingExample,
)
from data_contracts.arrow import arrow_schema, to_table

DATASETS: dict[str, type[Record]] = {
    "todoist_tasks": TodoistTask,
    "todoist_projects": TodoistProject,
    "todoist_completions": TodoistCompletion,
    "todoist_raw": TodoistRawPayload,
    "reactions": ReactionEvent,
    "rewards": RewardEvent,
    "decisions": Decision,
    "tip_scores": TipScore,
    "activations": Activation,
    "deliveries": NotificationDelivery,
    "quarantine": QuarantinedRow,
    "dead_letters": DeadLetter,
    "training_examples": TrainingExample,
    "feature_skew": FeatureSkew,
}
"""Every lake dataset and the contract of its rows."""


class UnknownDataset(KeyError):
    """A dataset name not in :data:`DATASETS`."""


class WrongContract(TypeError):
    """Records of another contract than the dataset's."""


@dataclass(frozen=True)
class WriteResult:
    """What one write did."""

    dataset: str
    written: int
    skipped: int
    files: tuple[str, ...] = ()


def contract_of(dataset: str) -> type[Record]:
    """The contract of ``dataset``'s rows; :class:`UnknownDataset` for a name not in :data:`DATASETS`."""
    model = DATASETS.get(dataset)
    if model is None:
        raise UnknownDataset(f"unknown lake dataset {dataset!r}; known: {sorted(DATASETS)}")
    return model


class Lake:
    """Append-only, date-partitioned Parquet datasets under ``root``.

    Examples
    --------
    >>> import tempfile
    >>> from datetime import UTC, datetime
    >>> from uuid import UUID
    >>> from data_contracts import ReactionEvent
    >>> lake = Lake(tempfile.mkdtemp())
    >>> e = ReactionEvent(event_id=UUID(int=1), decision_id=UUID(int=2), user_id="u1",
    ...                   candidate_id="task:1", reaction="done",
    ...                   occurred_at=datetime(2026, 5, 1, tzinfo=UTC))
    >>> lake.write("reactions", [e]).written, lake.write("reactions", [e]).written
    (1, 0)
    >>> lake.read("reactions").num_rows
    1
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    # -- paths -------------------------------------------------------------------------------
    def path(self, dataset: str) -> Path:
        """The folder of ``dataset``."""
        contract_of(dataset)
        return self.root / dataset

    def glob(self, dataset: str) -> str:
        """A glob that matches every committed file of ``dataset`` (for DuckDB or Feast)."""
        return str(self.path(dataset) / "dt=*" / "*.parquet")

    def files(self, dataset: str) -> list[Path]:
        """The committed Parquet files of ``dataset``, in a stable order."""
        return sorted(self.path(dataset).glob("dt=*/*.parquet"))

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def _locked(self, dataset: str) -> Iterator[Path]:
        folder = self.path(dataset)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                for stale in folder.glob("dt=*/*.tmp"):  # left by a writer that died
                    stale.unlink(missing_ok=True)
                yield folder
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _key_strings(table: pa.Table, keys: Sequence[str]) -> pa.ChunkedArray:
        """One string per row that identifies its natural key (computed in Arrow, no Python
        objects per row): the key columns as text, joined by a separator; nulls as NUL."""
        columns = [pc.cast(table[k], pa.string()) for k in keys]
        if len(columns) == 1:
            return pc.fill_null(columns[0], "\x00")
        return pc.binary_join_element_wise(*columns, "\x1f", null_handling="replace", null_replacement="\x00")

    def _existing_keys(self, part: Path, model: type[Record], batch: pa.Table) -> pa.Array | None:
        files = sorted(part.glob("*.parquet"))
        if not files:
            return None
        keys = list(model.key_fields)
        key_schema = pa.schema([arrow_schema(model).field(k) for k in keys])
        first = pc.unique(batch[keys[0]])
        existing = pq.read_table(files, columns=keys, filters=pc.field(keys[0]).isin(first))
        return self._key_strings(existing.cast(key_schema), keys).combine_chunks()

    def _fresh(self, part: Path, model: type[Record], batch: pa.Table) -> tuple[pa.Table, pa.Array]:
        """The rows of ``batch`` whose key is not in the partition yet, first occurrence only,
        and their key strings."""
        keys = self._key_strings(batch, list(model.key_fields)).combine_chunks()
        candidates = pa.table({"k": keys, "i": pa.array(range(batch.num_rows), pa.int64())})
        existing = self._existing_keys(part, model, batch)
        if existing is not None and len(existing):
            candidates = candidates.filter(pc.invert(pc.is_in(candidates["k"], value_set=existing)))
        first = candidates.group_by("k", use_threads=False).aggregate([("i", "min")])
        rows = pc.sort_indices(first["i_min"])
        indices = pc.take(first["i_min"], rows)
        return batch.take(indices), pc.take(first["k"], rows).combine_chunks()

    def write(self, dataset: str, records: Sequence[Record]) -> WriteResult:
        """Append ``records`` to ``dataset``, skipping natural keys already present."""
        model = contract_of(dataset)
        for r in records:
            if type(r) is not model:
                raise WrongContract(f"{dataset} holds {model.__name__}, got {type(r).__name__}")
        return self.write_table(dataset, to_table(model, records))

    def write_table(self, dataset: str, table: pa.Table) -> WriteResult:
        """Append an Arrow table with the contract's exact schema (as :func:`to_table` builds it),
        with the same guarantees as :meth:`write`; for writers that already hold the table."""
        model = contract_of(dataset)
        schema = arrow_schema(model)
        if not table.schema.equals(schema, check_metadata=False):
            raise WrongContract(f"{dataset} holds {model.__name__}; the table's schema differs from it")
        if model.partition_field is None:
            raise TypeError(f"{model.__name__} declares no partition_field")
        column = table[model.partition_field]
        days = column if pa.types.is_date32(column.type) else pc.cast(column, pa.date32())
        written = skipped = 0
        files: list[str] = []
        with self._locked(dataset) as folder:
            staged: list[tuple[Path, Path]] = []
            for day in sorted(d for d in pc.unique(days).to_pylist() if d is not None):
                part = folder / f"dt={day.isoformat()}"
                part.mkdir(exist_ok=True)
                batch = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
                fresh, fresh_keys = self._fresh(part, model, batch)
                skipped += batch.num_rows - fresh.num_rows
                if fresh.num_rows == 0:
                    continue
                digest = hashlib.sha256("\x1e".join(sorted(fresh_keys.to_pylist())).encode()).hexdigest()
                final = part / f"part-{digest[:24]}.parquet"
                tmp = final.with_suffix(".parquet.tmp")
                with open(tmp, "wb") as sink:
                    pq.write_table(fresh, sink, compression="zstd")
                    sink.flush()
                    os.fsync(sink.fileno())
                staged.append((tmp, final))
                written += fresh.num_rows
            for tmp, final in staged:  # commit: a rename is atomic on POSIX
                os.replace(tmp, final)
                files.append(str(final))
            for part_dir in {final.parent for _, final in staged}:
                fd = os.open(part_dir, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return WriteResult(dataset=dataset, written=written, skipped=skipped, files=tuple(files))

    def delete_where(self, dataset: str, column: str, values: Sequence[str]) -> int:
        """Remove every row whose ``column`` is in ``values`` (erasure). Each affected file is
        rewritten to a temp file, fsynced and renamed over the old one (or removed when nothing
        is left), under the dataset's lock: readers see the old file or the new one, never half.
        Returns the number of rows removed."""
        if column not in arrow_schema(contract_of(dataset)).names or not values:
            return 0
        removed = 0
        with self._locked(dataset):
            for path in self.files(dataset):
                removed += rewrite_without(path, column, values)
        return removed

    # -- reading -----------------------------------------------------------------------------
    def read(
        self,
        dataset: str,
        where: str | None = None,
        params: Sequence[Any] = (),
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Every row of ``dataset`` (optionally filtered by a DuckDB ``where`` clause), as Arrow.

        The hive partition column ``dt`` is not returned; the contract's fields are (only
        ``columns`` when given: Parquet then reads nothing else).
        """
        model = contract_of(dataset)
        schema = arrow_schema(model)
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not self.files(dataset):
            return schema.empty_table()
        selected = ", ".join(f'"{n}"' for n in schema.names)
        sql = f"SELECT {selected} FROM read_parquet(?, hive_partitioning = false, union_by_name = true)"
        if where:
            sql += f" WHERE {where}"
        with duckdb.connect() as con:
            table: pa.Table = con.sql(sql, params=[self.glob(dataset), *params]).to_arrow_table()
        return table.cast(_loose(schema))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with one view per non-empty dataset, named after it."""
        con = duckdb.connect()
        for name in DATASETS:
            if self.files(name):
                con.execute(
                    f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{self.glob(name)}', "
                    "hive_partitioning = true, union_by_name = true)"
                )
        return con


def rewrite_without(path: Path, column: str, values: Sequence[str]) -> int:
    """Rewrite the Parquet file ``path`` atomically without the rows whose ``column`` is in
    ``values``; remove the file when no row is left. Returns the rows removed."""
    if column not in pq.read_schema(path).names:
        return 0
    table = pq.read_table(path)
    hit = pc.fill_null(
        pc.is_in(pc.cast(table[column], pa.string()), value_set=pa.array(list(values), pa.string())), False
    )
    removed = int(pc.sum(hit).as_py() or 0)
    if removed == 0:
        return 0
    kept = table.filter(pc.invert(hit))
    if kept.num_rows == 0:
        path.unlink()
    else:
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as sink:
            pq.write_table(kept, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return removed


def get_lake() -> Lake:
    """The lake named by the settings."""
    from oo.settings import get_settings

    return Lake(get_settings().lake_root)


def _loose(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the children of nested fields nullable: a null struct (``due: None``)
    reads back with null children, which a non-nullable child field would refuse."""

    def loosen(t: pa.DataType) -> pa.DataType:
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, loosen(f.type), nullable=True) for f in t])
        if pa.types.is_list(t):
            return pa.list_(pa.field(t.value_field.name, loosen(t.value_type), nullable=True))
        return t

    return pa.schema([pa.field(f.name, loosen(f.type), nullable=f.nullable) for f in schema], metadata=schema.metadata)
