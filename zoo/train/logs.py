"""The run directory's logs (rank 0 writes them): ``log.csv`` per epoch, ``steps.csv`` per
optimizer step, and TensorBoard event files when ``torch.utils.tensorboard`` is importable.

Both CSV files are plain comma-separated text with a header row, floats written with 6
significant digits; a resumed run first drops the rows after the step it resumes from, so the
files of an interrupted and resumed run read as those of an uninterrupted one (the ``seconds``
aside).  Columns are listed in :mod:`zoo.train` ("Run directory").
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _read_until(path: Path, step: int | None) -> tuple[list[str] | None, list[dict[str, str]]]:
    if step is None or not path.is_file():
        return None, []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if int(r["step"]) <= step]
        return reader.fieldnames, rows


class EpochLog:
    """``log.csv``: one row per epoch, the file rewritten whole; the header is fixed by the first row."""

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.rows: list[dict[str, Any]] = _read_until(path, keep_until_step)[1]
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.rows:
            self.path.write_text("")
            return
        cols = list(self.rows[0])
        with self.path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({k: _fmt(v) for k, v in row.items()})  # strings, as read back on resume
        self._rewrite()


class StepLog:
    """``steps.csv``: one row per optimizer step, appended and flushed as the step ends (readable
    while the run goes on); the header is fixed by the first row."""

    def __init__(self, path: Path, keep_until_step: int | None):
        cols, rows = _read_until(path, keep_until_step)
        self._fh = path.open("w", newline="")
        self._w = None
        if cols and rows:
            self._start(cols)
            self._w.writerows(rows)
            self._fh.flush()

    def _start(self, cols) -> None:
        self._w = csv.DictWriter(self._fh, fieldnames=list(cols), extrasaction="ignore", restval="")
        self._w.writeheader()

    def add(self, row: dict[str, Any]) -> None:
        if self._w is None:
            self._start(row)
        self._w.writerow({k: _fmt(v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def tensorboard(run_dir: Path):
    """A ``SummaryWriter`` on ``run_dir/tensorboard``, or None when tensorboard is not installed
    (it is optional: the CSV files hold everything it would show)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
