"""The Prometheus exporter: metric families of a snapshot, the exporter command scraped over HTTP,
and ``collect --prometheus`` serving the ticks it records."""

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
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from devloop.cli import cli
from devloop.dashboard.snapshot import STATE_FILE
from devloop.errors import UsageError
from devloop.exporter import parse_address
from devloop.simulate import simulate
from devloop.store.query import connect
from tests.helpers.procs import helpers, vm_rss_bytes
from tests.test_dashboard import state_fixture

DEADLINE = 60.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exp") / ".devloop-workspace"
    simulate(folder, hours=1 / 3, projects=3, agents_per_project=2, interval=5, seed=1)
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
    server = Server("workspace", "exporter", "--workspace-dir", str(sim), "--port", "0")
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
                    "--host", "127.0.0.1")  # fmt: skip
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
    from devloop.dashboard.snapshot import StoreSnapshots
    from devloop.exporter import serve

    dashboard = json.loads((ROOT / "contrib" / "grafana-devloop.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for expr in exprs for name in re.findall(r"\bdevloop_[a-z_]+", expr)}
    (sim / STATE_FILE).write_text(json.dumps(state_fixture()))  # every family has samples
    server = serve(StoreSnapshots(load_workspace(sim)), port=0)
    try:
        served = {name for name, _ in scrape(server.url)}
    finally:
        server.close()
        (sim / STATE_FILE).unlink()
    assert len(used) >= 15
    assert used <= served, used - served
