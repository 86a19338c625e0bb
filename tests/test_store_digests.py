"""The per-file digests (``store.db``, kept in ``_facts.json`` with the footer facts): the
names, core counts and span a report starts from equal a scan of the views, from Parquet files
and the spool tail, and follow new and rewritten files."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from devloop.analytics import Store
from devloop.store import StoreWriter, write_rollups
from devloop.store.layout import FACTS_FILE, FACTS_VERSION
from tests.test_store_support import HOUR, SECOND, T0, T0_DT, tick_rows


def _process(ts: int, project: str, agent: str, pid: int) -> tuple[Any, ...]:
    return (ts, "devbox", pid, T0, project, agent, 1, "ruff", "ruff check", "/src", "me", None)


def _system(ts: int, host: str = "devbox", cores: int = 8) -> tuple[Any, ...]:
    return (ts, host, cores, 1.5, 32 * 1024**3, 9 * 1024**3, 23 * 1024**3)


def _scanned(ws: Path) -> tuple[set[tuple[str, str]], dict[str, int], tuple[Any, Any]]:
    """What the views say, by full scans (the code the digests replace)."""
    with Store(ws) as store:
        names = set(
            store.rows(
                "SELECT DISTINCT project, agent FROM processes "
                "UNION SELECT DISTINCT project, agent FROM limits"
            )
        )
        cores = dict(store.rows("SELECT host, arg_max(cores, ts) FROM system GROUP BY host"))
        ((first, last),) = store.rows("SELECT min(ts), max(ts) FROM system")
    return names, cores, (first, last)


def _digested(ws: Path) -> tuple[set[tuple[str, str]], dict[str, int], tuple[Any, Any]]:
    with Store(ws) as store:
        names = {(p, a) for p, agents in store.known().items() for a in agents}
        cores = dict(store.rows(f"SELECT host, cores FROM {store.cores_sql()}"))
        span = store.span()
    return names, cores, span


def test_digests_equal_the_scans_and_follow_new_files_and_the_spool(tmp_path: Path) -> None:
    ws = tmp_path / ".devloop-workspace"
    root = ws / "metrics"
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(T0))
        writer.append("processes", [_process(T0, "alpha", "linter", 100)])
        writer.append("system", [_system(T0), _system(T0 + SECOND, cores=6)])
    want = (
        {("alpha", "linter")},
        {"devbox": 6},  # the newest tick's count
        (T0_DT, T0_DT + timedelta(seconds=1)),
    )
    assert _scanned(ws) == want
    assert _digested(ws) == want
    assert not (root / FACTS_FILE).exists()  # a report only reads
    write_rollups(root)  # as compaction does
    saved = json.loads((root / FACTS_FILE).read_text())
    digested = {Path(entry["path"]).parts[-4] for entry in saved["files"] if "digest" in entry}
    assert digested == {"processes", "system"}  # not samples: its rollups are its digest
    assert _digested(ws) == want  # now from _facts.json

    # A later hour: a new file of each table, another host.
    later = T0 + HOUR
    with StoreWriter(root) as writer:
        writer.append("samples", tick_rows(later))
        writer.append("processes", [_process(later, "beta", "tests", 200)])
        writer.append("system", [_system(later, cores=4), _system(later, "buildbox", 16)])
    want = (
        {("alpha", "linter"), ("beta", "tests")},
        {"devbox": 4, "buildbox": 16},
        (T0_DT, T0_DT + timedelta(hours=1)),
    )
    assert _scanned(ws) == want
    assert _digested(ws) == want

    # The spool tail of a running collector (not yet Parquet) counts too.
    writer = StoreWriter(root, segment_seconds=3600)
    try:
        tail = later + 5 * SECOND
        writer.append("samples", tick_rows(tail))
        writer.append("processes", [_process(tail, "gamma", "fmt", 300)])
        writer.append("system", [_system(tail, cores=12)])
        writer.flush()
        want = (
            {("alpha", "linter"), ("beta", "tests"), ("gamma", "fmt")},
            {"devbox": 12, "buildbox": 16},
            (T0_DT, T0_DT + timedelta(hours=1, seconds=5)),
        )
        assert _scanned(ws) == want
        assert _digested(ws) == want
    finally:
        writer.close()


def test_a_rewritten_file_is_digested_again(tmp_path: Path) -> None:
    ws = tmp_path / ".devloop-workspace"
    root = ws / "metrics"
    with StoreWriter(root) as writer:
        writer.append("processes", [_process(T0, "alpha", "linter", 100)])
        writer.append("system", [_system(T0)])
    assert _digested(ws)[0] == {("alpha", "linter")}
    write_rollups(root)  # as compaction does
    # A stale entry (as if the file had been replaced since): its stat no longer matches.
    path = root / FACTS_FILE
    saved = json.loads(path.read_text())
    for entry in saved["files"]:
        if "/processes/" in entry["path"]:
            entry["digest"] = [["stale", "entry"]]
            entry["size"] += 1
    path.write_text(json.dumps(saved))
    assert _digested(ws)[0] == {("alpha", "linter")}
    # A corrupt facts file is ignored by the reports and rewritten by the next compaction.
    path.write_text("{not json")
    assert _digested(ws) == _scanned(ws)
    assert path.read_text() == "{not json"
    write_rollups(root)
    assert json.loads(path.read_text())["version"] == FACTS_VERSION
