"""notebooks/: committed without outputs, and each runs top to bottom on sample_data/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    names = [path.name for path in ALL]
    assert "workspace-analysis.ipynb" in names
    assert "autotune-review.ipynb" in names


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_notebooks_are_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} cell {index} has outputs: strip them"
            assert cell["execution_count"] is None, f"{path.name} cell {index} was executed"


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec running this interpreter's ipykernel (the venv's), found first."""
    spec = tmp_path / "kernels" / "devloop-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "devloop tests", "language": "python",
    }))  # fmt: skip
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("DEVLOOP_NOTEBOOK_WORKSPACE", raising=False)
    return "devloop-test"


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_notebook_runs_top_to_bottom(path, venv_kernel):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name=venv_kernel,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )  # fmt: skip
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) >= 4, f"{path.name} drew {len(figures)} figures"
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    if path.name == "workspace-analysis.ipynb":
        assert "sample: projects devloop, wordfreq, unitconv" in text
        assert "recorded 2026-11-27 05:26:59 .. 05:48:19 UTC (21 minutes)" in text
    if path.name == "autotune-review.ipynb":
        assert "suggestions for 3 projects and 12 agents over 21 minutes" in text
        assert "backtest: 7 folds of 1 h" in text
        assert "workspace.json unchanged" in text
