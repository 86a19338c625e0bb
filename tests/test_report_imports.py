"""A report as a user runs it imports neither polars nor pyarrow (issue 13: its whole-process
time is what a user waits for, and those two cost more than the query on a warm store).

The CLI renders the rows DuckDB returned (:class:`devloop.store.db.Rows`); the Python
API's DataFrames are made from the same rows when first asked for, so they are unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devloop.simulate import simulate

HEAVY = ("polars", "pyarrow", "pandas")

#: Runs the CLI in this process and prints, as the last line, the heavy modules it imported.
RUN = textwrap.dedent(
    f"""
    import json, sys
    from devloop.cli import main
    try:
        main()  # reads sys.argv[1:]: the arguments after -c CODE
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """
)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three closed hours as ``simulate`` writes them (rollups and file facts included)."""
    out = tmp_path_factory.mktemp("imports") / ".devloop-workspace"
    simulate(out, hours=3, projects=2, agents_per_project=2, interval=5.0, seed=3)
    return out


def _run(*argv: str) -> tuple[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", RUN, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # the whole table, whatever runs the tests
    )
    assert result.returncode == 0, result.stderr
    *output, last = result.stdout.splitlines()
    status = json.loads(last)
    assert status["code"] == 0, result.stdout + result.stderr
    return "\n".join(output), status["heavy"]


@pytest.mark.parametrize("fmt", ["json", "table", "csv"])
def test_peak_usage_imports_neither_polars_nor_pyarrow(small_store: Path, fmt: str) -> None:
    output, heavy = _run(
        "workspace", "analytics", "peak-usage", "--workspace-dir", str(small_store),
        "--format", fmt,
    )  # fmt: skip
    assert heavy == []
    assert "workspace" in output


@pytest.mark.parametrize("fmt", ["json", "table", "csv"])
def test_the_export_imports_neither_polars_nor_pyarrow(small_store: Path, fmt: str) -> None:
    output, heavy = _run(
        "workspace", "metrics", "--interval", "5m", "--workspace-dir", str(small_store),
        "--format", fmt,
    )  # fmt: skip
    assert heavy == []
    assert "proj-1" in output


def test_the_api_frames_are_the_rows_the_cli_renders(small_store: Path) -> None:
    from devloop.analytics import export_metrics, peak_usage, records

    report = peak_usage(small_store)
    assert records(report.peaks) == report.to_json()["peaks"]
    assert report.peaks.columns == list(report.result.columns)
    assert report.peaks.rows() == report.result.rows
    exported = export_metrics(small_store, interval=300.0, detailed=True)
    assert records(exported.rows) == exported.to_json()["rows"]
    assert exported.rows.rows() == exported.result.rows


def test_files_unknown_to_facts_json_are_read_without_pyarrow(
    small_store: Path, tmp_path: Path
) -> None:
    """The files written since the last compaction (none of them in ``_facts.json``, as in a
    live workspace) have their footers read by DuckDB: still no pyarrow, the same report."""
    import shutil

    from devloop.store.layout import FACTS_FILE

    copy = tmp_path / ".devloop-workspace"
    shutil.copytree(small_store, copy)
    (copy / "metrics" / FACTS_FILE).unlink()
    argv = ["workspace", "analytics", "peak-usage", "--format", "json", "--workspace-dir"]
    output, heavy = _run(*argv, str(copy))
    assert heavy == []
    assert output == _run(*argv, str(small_store))[0]


def test_footers_read_by_duckdb_are_the_footers_pyarrow_reads(
    small_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devloop.store import db, layout

    # Nothing known, nothing seeded from _facts.json: every footer is read, by DuckDB.
    monkeypatch.setattr(layout, "_facts_cache", {})
    monkeypatch.setattr(db, "load_facts", lambda root: {})
    uncached: list[Path] = []
    monkeypatch.setattr(layout, "_read_facts_uncached", lambda path, size: uncached.append(path))
    db.connect_listed(small_store / "metrics")[0].close()
    assert uncached == []
    read = {key: value[2] for key, value in layout._facts_cache.items()}
    monkeypatch.undo()
    assert len(read) > 10
    for key, facts in read.items():
        assert isinstance(facts, layout.FileFacts)
        assert layout._read_facts_uncached(Path(key), facts.bytes) == facts
