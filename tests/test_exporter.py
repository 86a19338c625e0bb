"""The Prometheus exporter: metric families of a snapshot, the exporter command scraped over HTTP,
``collect --prometheus`` serving the ticks it records, and ``devloop_up`` telling a live tick
from a stale one (issue 15: a stale tick was served as live)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from devloop.cli import cli
from devloop.dashboard.snapshot import STATE_FILE
from devloop.errors import UsageError
from devloop.exporter import parse_address
from devloop.simulate import simulate
from devloop.store import StoreWriter
from devloop.store.db import connect
from tests.helpers.procs import helpers, vm_rss_bytes
from tests.test_dashboard import state_fixture

pytestmark = pytest.mark.realtime

DEADLINE = 60.0
ROOT = Path(__file__).resolve().parent.parent


#: The simulation's newest tick is at most this old (it starts on a Monday of the last two
#: weeks, for the same rows as the simulator's default Monday): the exporter is told to take
#: it as live.
SIM_LIVE = "30d"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exp") / ".devloop-workspace"
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday() + 7)
    simulate(folder, hours=1 / 3, projects=3, agents_per_project=2, interval=5, seed=1,
             start=monday)  # fmt: skip
    return folder


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the page at ``url``, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Server:
    """A devloop command that prints ``... on http://HOST:PORT/metrics`` when it serves."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devloop", *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        self.err = ""
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self.proc.stderr is not None
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            found = re.search(r"(http://\S+/metrics)", self.err)
            if found:
                return found.group(1)
            if select.select([self.proc.stderr], [], [], 0.5)[0]:
                line = self.proc.stderr.readline()
                if not line and self.proc.poll() is not None:
                    break
                self.err += line
        raise AssertionError(f"no URL announced; stderr:\n{self.err}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        self.err += self.proc.stderr.read()
        self.proc.stderr.close()
        return code


def _newest_tick(folder: Path):
    db = connect(folder / "metrics")
    ((at, cores),) = db.execute(
        "SELECT max(ts), arg_max(cores, ts) FROM system"
    ).fetchall()  # fmt: skip
    rows = db.execute(
        "SELECT project, agent, sum(cpu_cores), sum(rss_bytes), sum(fds), sum(threads), count(*) "
        "FROM samples WHERE ts = ? GROUP BY project, agent",
        [at],
    ).fetchall()
    limits = db.execute(
        "SELECT project, agent, arg_max(cpu_limit_percent, ts), arg_max(memory_limit_bytes, ts) "
        "FROM limits GROUP BY project, agent"
    ).fetchall()
    return at, cores, rows, {(p, a): (c, m) for p, a, c, m in limits}


def test_the_exporter_serves_the_newest_tick_of_a_real_store(sim):
    at, cores, rows, limits = _newest_tick(sim)
    server = Server("workspace", "exporter", "--workspace-dir", str(sim), "--port", "0",
                    "--stale-after", SIM_LIVE)  # fmt: skip
    try:
        assert server.url.startswith("http://127.0.0.1:")  # this machine only, by default
        metrics = scrape(server.url)
    finally:
        assert server.stop() == 0, server.err
    assert "Stopped." in server.err
    assert metrics[("devloop_up", ())] == 1.0
    assert metrics[("devloop_tick_timestamp_seconds", ())] == at.timestamp()
    assert metrics[("devloop_host_cores", ())] == cores
    assert metrics[("devloop_enforcement_active", ())] == 0.0
    assert rows, "the simulated tick has processes"
    for project, agent, cpu_cores, rss, fds, threads, count in rows:
        labels = (("agent", agent), ("project", project))
        assert metrics[("devloop_agent_cpu_cores", labels)] == pytest.approx(cpu_cores)
        assert metrics[("devloop_agent_cpu_percent", labels)] == pytest.approx(
            100 * cpu_cores / cores
        )
        assert metrics[("devloop_agent_memory_bytes", labels)] == rss
        assert metrics[("devloop_agent_fds", labels)] == fds
        assert metrics[("devloop_agent_threads", labels)] == threads
        assert metrics[("devloop_agent_processes", labels)] == count
        assert metrics[("devloop_agent_cpu_limit_percent", labels)] == limits[(project, agent)][0]
        assert metrics[("devloop_agent_state", (*labels, ("state", "running")))] == 1.0
        assert metrics[("devloop_agent_state", (*labels, ("state", "paused")))] == 0.0
    for project in ("proj-1", "proj-2", "proj-3"):
        labels = (("project", project),)
        mine = [r for r in rows if r[0] == project]
        assert metrics[("devloop_project_memory_bytes", labels)] == sum(r[3] for r in mine)
        assert metrics[("devloop_project_cpu_limit_percent", labels)] == limits[(project, "")][0]
        assert metrics[("devloop_project_memory_limit_bytes", labels)] == limits[(project, "")][1]
    assert metrics[("devloop_workspace_memory_bytes", ())] == sum(r[3] for r in rows)
    assert metrics[("devloop_workspace_cpu_limit_percent", ())] == 60.0
    # the simulator's pause events of proj-2 name no agent: the project-level pauses count none
    assert metrics[("devloop_pauses_total", ())] == 0.0
    assert metrics[("devloop_queue_length", ())] == 0.0


def test_the_exporter_reads_the_enforcement_state_file_at_each_scrape(sim):
    server = Server("workspace", "exporter", "--workspace-dir", str(sim), "--port", "0",
                    "--host", "127.0.0.1", "--stale-after", SIM_LIVE)  # fmt: skip
    try:
        before = scrape(server.url)
        (sim / STATE_FILE).write_text(json.dumps(state_fixture()))
        after = scrape(server.url)
    finally:
        (sim / STATE_FILE).unlink(missing_ok=True)
        assert server.stop() == 0, server.err
    linter = (("agent", "linter"), ("project", "proj-1"))
    assert before[("devloop_agent_state", (*linter, ("state", "paused")))] == 0.0
    assert after[("devloop_agent_state", (*linter, ("state", "paused")))] == 1.0
    assert after[("devloop_agent_state", (*linter, ("state", "running")))] == 0.0
    assert after[("devloop_agent_pauses_total", linter)] == 2.0
    assert after[("devloop_agent_resumes_total", linter)] == 1.0
    assert after[("devloop_agent_cpu_limit_percent", linter)] == 5.0
    assert after[("devloop_agent_memory_limit_bytes", linter)] == 128 * 1024**2
    assert after[("devloop_project_pauses_total", (("project", "proj-1"),))] == 2.0
    assert after[("devloop_project_cpu_limit_percent", (("project", "proj-1"),))] == 30.0
    assert after[("devloop_project_priority", (("project", "proj-1"),))] == 1.0
    queued = (("agent", "test-runner"), ("project", "proj-2"))
    assert after[("devloop_agent_state", (*queued, ("state", "queued")))] == 1.0
    assert after[("devloop_queue_length", ())] == 1.0
    assert after[("devloop_pauses_total", ())] == 2.0
    assert after[("devloop_enforcement_active", ())] == 1.0
    assert after[("devloop_workspace_memory_limit_bytes", ())] == 2 * 1024**3


@pytest.mark.slow
def test_collect_serves_each_tick_it_records_and_the_enforcement_state(tmp_path):
    # project names no other test tags its processes with: other test runs may share the machine
    api, web = f"api-{os.getpid()}", f"web-{os.getpid()}"
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "projects": [{"name": api, "path": "api"}, {"name": web, "path": "web"}],
        "global": {"resourceLimits": {"checkInterval": 0.5, "maxCpu": 50, "maxMemory": "1GB"}},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVLOOP_")}
    with helpers() as start:
        agent = start("files", "5", "2", tags=(api, "checker"))
        server = Server("workspace", "collect", "--workspace-dir", str(folder), "--enforce",
                        "--prometheus", "127.0.0.1:0", env=env)  # fmt: skip
        try:
            labels = (("agent", "checker"), ("project", api))
            end = time.monotonic() + DEADLINE
            metrics = scrape(server.url)
            while ("devloop_agent_processes", labels) not in metrics or not metrics.get(
                ("devloop_enforcement_active", ())
            ):
                assert time.monotonic() < end, "the tagged process never showed"
                time.sleep(0.2)
                metrics = scrape(server.url)
            rss = vm_rss_bytes(agent.pid)
        finally:
            code = server.stop()
        assert code == 0, server.err
    assert metrics[("devloop_up", ())] == 1.0
    # the enforcement's state file (written by the same collector) says what the agent is doing
    assert metrics[("devloop_enforcement_active", ())] == 1.0
    assert metrics[("devloop_agent_state", (*labels, ("state", "running")))] == 1.0
    assert metrics[("devloop_agent_pauses_total", labels)] == 0.0
    assert not (folder / STATE_FILE).exists()  # removed when the collector stopped
    assert metrics[("devloop_agent_processes", labels)] == 1.0
    assert metrics[("devloop_agent_threads", labels)] == 3.0  # main + 2 extra
    assert metrics[("devloop_agent_fds", labels)] >= 5.0 + 3  # 5 files + stdin/out/err
    assert abs(metrics[("devloop_agent_memory_bytes", labels)] - rss) < 0.2 * rss
    assert metrics[("devloop_project_cpu_limit_percent", (("project", api),))] == 25.0
    assert metrics[("devloop_project_memory_limit_bytes", (("project", web),))] == 512 * 1024**2
    assert metrics[("devloop_project_processes", (("project", web),))] == 0.0
    # what it served, it also recorded
    db = connect(folder / "metrics")
    ((count,),) = db.execute(
        "SELECT count(*) FROM samples WHERE agent = 'checker' AND pid = ?", [agent.pid]
    ).fetchall()
    assert count >= 1


def test_addresses():
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("localhost:http", "1.2.3.4:70000"):
        with pytest.raises(UsageError):
            parse_address(bad)
    result = CliRunner().invoke(cli, ["workspace", "collect", "--prometheus", "here:there"])
    assert result.exit_code == 2
    assert "Invalid value for --prometheus: expected HOST:PORT or PORT, got 'here:there'" in (
        result.stderr
    )


def test_a_port_in_use_is_an_error(sim):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["workspace", "exporter", "--workspace-dir", str(sim), "--port", str(port)]
        )
    assert result.exit_code == 1
    assert f"Error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_the_grafana_dashboard_queries_metrics_the_exporter_serves(sim):
    from devloop.config import load_workspace
    from devloop.exporter import StoreReadings, serve

    dashboard = json.loads((ROOT / "contrib" / "grafana-devloop.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for expr in exprs for name in re.findall(r"\bdevloop_[a-z_]+", expr)}
    (sim / STATE_FILE).write_text(json.dumps(state_fixture()))  # every family has samples
    server = serve(StoreReadings(load_workspace(sim)), port=0, stale_after=30 * 86400.0)
    try:
        served = {name for name, _ in scrape(server.url)}
    finally:
        server.close()
        (sim / STATE_FILE).unlink()
    assert len(used) >= 15
    assert used <= served, used - served


# --- devloop_up: a live tick, a stale one ------------------------------------------------------

S = 1_000_000  # microseconds
T0 = 1_780_000_000 * S  # the first tick of the store below
SPACING = 5  # seconds between its ticks: the stale bound is 3 x 5 s
TICKS = 5
NEWEST = (T0 + (TICKS - 1) * SPACING * S) / S  # unix seconds of the newest tick
HOST_CORES = 4
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]
USAGE_PREFIXES = ("devloop_workspace_", "devloop_project_", "devloop_agent_")


def _sample(
    ts: int, project: str, agent: str, pid: int, cores: float, rss: int
) -> tuple[object, ...]:
    """A samples row (columns.SAMPLES order)."""
    return (ts, "devbox", project, agent, pid, T0 - 60 * S, 1, "tool", cores, 1.0, rss, 6, 2,
            0, 0, "running")  # fmt: skip


def _write_tick(writer: StoreWriter, k: int) -> None:
    """Tick ``k``: api/linter's two processes every tick; web/tests' one in all but the last."""
    ts = T0 + k * SPACING * S
    rows = [_sample(ts, "api", "linter", 10, 0.5, 100 * 2**20),
            _sample(ts, "api", "linter", 11, 0.25, 50 * 2**20)]  # fmt: skip
    if k < TICKS - 1:
        rows.append(_sample(ts, "web", "tests", 20, 1.0, 300 * 2**20))
    writer.append("samples", rows)
    writer.append("system", [(ts, "devbox", HOST_CORES, 1.0, 16 * 2**30, 4 * 2**30, 12 * 2**30)])
    writer.flush()


def _workspace(tmp_path: Path) -> Path:
    folder = tmp_path / ".devloop-workspace"
    folder.mkdir()
    (folder / "workspace.json").write_text(json.dumps({
        "projects": [{"name": "api", "path": "api"}, {"name": "web", "path": "web"}],
        "global": {"resourceLimits": {"checkInterval": 10, "maxCpu": 50, "maxMemory": "1GB"}},
    }))  # fmt: skip
    return folder


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[tuple[Path, StoreWriter]]:
    """A workspace whose store a collector (a StoreWriter of this process) is recording:
    five ticks written, the writer lock held. Yields (workspace folder, writer)."""
    folder = _workspace(tmp_path)
    with StoreWriter(folder / "metrics") as writer:
        for k in range(TICKS):
            _write_tick(writer, k)
        yield folder, writer


def scrape_at(folder: Path, now: float, stale_after: float | None = None) -> Samples:
    """Every sample one scrape of ``folder``'s store exports, the scrape's clock at ``now``."""
    from devloop.config import load_workspace
    from devloop.exporter import StoreReadings
    from devloop.exporter.metrics import SnapshotCollector

    collector = SnapshotCollector(
        StoreReadings(load_workspace(folder)), stale_after=stale_after, clock=lambda: now
    )
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def _usage_series(metrics: Samples) -> list[tuple[str, Labels]]:
    return sorted(key for key in metrics if key[0].startswith(USAGE_PREFIXES))


def _running(metrics: Samples) -> set[tuple[str, str]]:
    return {
        (dict(labels)["project"], dict(labels)["agent"])
        for (name, labels), value in metrics.items()
        if name == "devloop_agent_state" and dict(labels)["state"] == "running" and value == 1.0
    }


LINTER = (("agent", "linter"), ("project", "api"))


def test_a_fresh_tick_of_a_running_collector_is_up_with_its_usage(recording):
    folder, _ = recording
    metrics = scrape_at(folder, NEWEST + 1.0)
    assert metrics[("devloop_up", ())] == 1.0
    assert metrics[("devloop_collector_running", ())] == 1.0
    assert metrics[("devloop_tick_timestamp_seconds", ())] == NEWEST
    assert metrics[("devloop_tick_age_seconds", ())] == 1.0
    assert metrics[("devloop_stale_after_seconds", ())] == 3 * SPACING  # from the store's ticks
    assert metrics[("devloop_agent_cpu_cores", LINTER)] == 0.75
    assert metrics[("devloop_agent_cpu_percent", LINTER)] == 100 * 0.75 / HOST_CORES
    assert metrics[("devloop_agent_memory_bytes", LINTER)] == 150 * 2**20
    assert metrics[("devloop_agent_processes", LINTER)] == 2.0
    assert metrics[("devloop_workspace_cpu_percent", ())] == 100 * 0.75 / HOST_CORES
    assert metrics[("devloop_project_processes", (("project", "web"),))] == 0.0
    # web/tests had a process at every tick but the newest: it is not running now
    assert _running(metrics) == {("api", "linter")}


def test_a_tick_a_minute_old_is_stale_up_0_and_no_usage(recording):
    folder, _ = recording
    metrics = scrape_at(folder, NEWEST + 60.0)
    assert metrics[("devloop_up", ())] == 0.0
    assert metrics[("devloop_tick_age_seconds", ())] == pytest.approx(60.0, abs=1e-6)
    assert metrics[("devloop_tick_timestamp_seconds", ())] == NEWEST
    assert metrics[("devloop_stale_after_seconds", ())] == 3 * SPACING
    assert metrics[("devloop_collector_running", ())] == 1.0  # alive, but its tick is old
    assert _usage_series(metrics) == []
    assert _running(metrics) == set()
    assert not any(name == "devloop_agent_state" for name, _ in metrics)
    # the same tick 14 s old is within the bound: live
    assert scrape_at(folder, NEWEST + 14.0)[("devloop_up", ())] == 1.0
    assert scrape_at(folder, NEWEST + 16.0)[("devloop_up", ())] == 0.0


def test_stale_after_replaces_the_bound(recording):
    folder, _ = recording
    metrics = scrape_at(folder, NEWEST + 60.0, stale_after=120.0)
    assert metrics[("devloop_up", ())] == 1.0
    assert metrics[("devloop_stale_after_seconds", ())] == 120.0
    assert metrics[("devloop_agent_processes", LINTER)] == 2.0
    assert scrape_at(folder, NEWEST + 2.0, stale_after=1.0)[("devloop_up", ())] == 0.0


def test_a_fresh_tick_whose_collector_is_gone_is_not_up(recording):
    folder, writer = recording
    writer.close()  # the collector stops: its lock is released, the pid cleared
    metrics = scrape_at(folder, NEWEST + 1.0)
    assert metrics[("devloop_up", ())] == 0.0
    assert metrics[("devloop_collector_running", ())] == 0.0
    assert metrics[("devloop_tick_age_seconds", ())] == 1.0
    assert _usage_series(metrics) == []


def test_a_collector_killed_leaves_its_pid_and_is_seen_gone(recording):
    folder, writer = recording
    writer.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (folder / "metrics" / ".lock").write_text(dead.stdout)  # what a SIGKILL leaves
    metrics = scrape_at(folder, NEWEST + 1.0)
    assert metrics[("devloop_collector_running", ())] == 0.0
    assert metrics[("devloop_up", ())] == 0.0


def test_a_store_without_lock_file_is_judged_by_its_age(tmp_path):
    folder = _workspace(tmp_path)
    with StoreWriter(folder / "metrics") as writer:
        _write_tick(writer, 0)  # one tick: no spacing to read, checkInterval (10 s) it is
    (folder / "metrics" / ".lock").unlink()  # as a simulation or a copied store has none
    fresh = scrape_at(folder, T0 / S + 29.0)
    assert ("devloop_collector_running", ()) not in fresh
    assert fresh[("devloop_stale_after_seconds", ())] == 30.0
    assert fresh[("devloop_up", ())] == 1.0
    assert scrape_at(folder, T0 / S + 31.0)[("devloop_up", ())] == 0.0


def test_an_agent_without_processes_at_the_tick_is_never_running(recording):
    folder, _ = recording
    state = state_fixture(ts=NEWEST)
    state["agents"] = {
        key: {"project": project, "agent": agent, "state": "running", "pids": [pid],
              "cpu_percent": 10.0, "memory_bytes": 2**20, "fds": 1, "threads": 1,
              "cpu_limit": None, "memory_limit_bytes": None, "pauses": 0, "resumes": 0}
        for key, project, agent, pid in (("api/linter", "api", "linter", 10),
                                         ("web/tests", "web", "tests", 20))
    }  # fmt: skip
    state["queue"], state["pauses_total"] = [], 0
    # the enforcer's last check still saw web/tests; the newest tick has none of its processes
    (folder / STATE_FILE).write_text(json.dumps(state))
    metrics = scrape_at(folder, NEWEST + 1.0)
    assert metrics[("devloop_enforcement_active", ())] == 1.0
    tests = (("agent", "tests"), ("project", "web"))
    assert metrics[("devloop_agent_state", (*tests, ("state", "running")))] == 0.0
    assert metrics[("devloop_agent_state", (*tests, ("state", "idle")))] == 1.0
    assert _running(metrics) == {("api", "linter")}


def test_the_judgement_is_pure():
    from devloop.exporter import judge, stale_bound

    assert stale_bound(5.0) == 15.0
    assert stale_bound(1.0) == 10.0  # the floor
    assert stale_bound(None) == 10.0
    assert stale_bound(5.0, 2.0) == 2.0  # --stale-after wins, floor or not
    live = judge(100.0, now=115.0, stale_after=15.0, collector=None)
    assert (live.up, live.age) == (True, 15.0)
    assert not judge(100.0, now=115.5, stale_after=15.0, collector=True).up
    assert not judge(100.0, now=101.0, stale_after=15.0, collector=False).up
    assert judge(100.0, now=90.0, stale_after=15.0, collector=True).age == 0.0  # clock stepped back
    empty = judge(None, now=100.0, stale_after=15.0, collector=True)
    assert (empty.up, empty.age) == (False, None)


def test_looking_never_writes(recording):
    folder, writer = recording
    writer.close()
    (folder / STATE_FILE).write_text(json.dumps(state_fixture(ts=NEWEST)))
    before = {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
    }
    for now in (NEWEST + 1.0, NEWEST + 60.0):
        scrape_at(folder, now)
        scrape_at(folder, now, stale_after=3600.0)
    after = {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
    }
    assert after == before


def test_the_exporter_serves_a_stale_store_as_down(sim):
    at, _, rows, _ = _newest_tick(sim)
    server = Server("workspace", "exporter", "--workspace-dir", str(sim), "--port", "0")
    try:
        metrics = scrape(server.url)
        now = time.time()
    finally:
        assert server.stop() == 0, server.err
    assert rows, "the newest tick has processes, which must not be exported as current"
    assert metrics[("devloop_up", ())] == 0.0
    assert metrics[("devloop_tick_timestamp_seconds", ())] == at.timestamp()
    assert 0 <= now - at.timestamp() - metrics[("devloop_tick_age_seconds", ())] < 30
    assert metrics[("devloop_stale_after_seconds", ())] == 15.0  # 3 x the simulated 5 s
    assert _usage_series(metrics) == []
    assert _running(metrics) == set()


def test_servers_bind_this_machine_only_by_default(sim):
    from devloop.cli.monitor import exporter
    from devloop.config import load_workspace
    from devloop.exporter import DEFAULT_HOST, StoreReadings, serve

    assert DEFAULT_HOST == "127.0.0.1"
    options = {param.name: param.default for param in exporter.params}
    assert options["host"] == "127.0.0.1"
    server = serve(StoreReadings(load_workspace(sim)), port=0)
    try:
        assert server._server.socket.getsockname()[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.close()


def test_a_bad_staleness_bound_is_refused(sim):
    from devloop.config import load_workspace
    from devloop.exporter import StoreReadings, serve

    result = CliRunner().invoke(
        cli, ["workspace", "exporter", "--workspace-dir", str(sim), "--stale-after", "soon"]
    )
    assert result.exit_code == 2
    assert "Invalid value for --stale-after" in result.stderr
    result = CliRunner().invoke(
        cli, ["workspace", "exporter", "--workspace-dir", str(sim), "--stale-after", "0s"]
    )
    assert result.exit_code == 2
    assert "Invalid value for --stale-after: must be above 0, got '0s'" in result.stderr
    with pytest.raises(UsageError, match="must be above 0 seconds, got 0"):
        serve(StoreReadings(load_workspace(sim)), port=0, stale_after=0.0)
