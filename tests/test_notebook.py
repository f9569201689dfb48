"""examples/quickstart.ipynb runs top to bottom in a real Python kernel, on fake models, and
shows what it promises: the result as HTML, a live view that updates, the exported data. The
kernel runs with reflectkit's files in a directory of the test's own (``throwaway_files``);
tests/test_user_data.py checks that the notebook writes none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def _kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The python3 kernel; installed into a temporary prefix when this environment has none."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        prefix = tmp_path / "kernel"
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix)],
            check=True,
            capture_output=True,
        )
        monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return "python3"


class RecordingClient(nbclient.NotebookClient):  # type: ignore[misc, name-defined]
    """Keeps every display update the kernel sent, which the saved outputs do not show."""

    updates: list[str]

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        if msg["msg_type"] == "update_display_data":
            self.updates.append(msg["content"]["data"].get("text/html", ""))
        return super().process_message(msg, cell, cell_index)


@pytest.mark.usefixtures("throwaway_files")
def test_the_quickstart_notebook_runs_and_shows_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # a committed notebook carries no stale outputs
        assert cell.get("outputs", []) == []
    client = RecordingClient(
        notebook,
        timeout=300,
        kernel_name=_kernel(tmp_path, monkeypatch),
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.updates = []
    client.execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert errors == []

    # The result cell: its HTML, answer first.
    [shown] = [o for o in code[1].outputs if o.output_type == "execute_result"]
    page = shown.data["text/html"]
    assert page.startswith('<div class="reflectkit-result"')
    assert 'border-left: 4px solid #2e7d32;">4</div>' in page
    assert "stop: passed" in page

    # The live cell: one output, updated while the run went, ending as the result.
    [live] = [o for o in code[2].outputs if o.output_type == "display_data"]
    assert live.data["text/html"].startswith('<div class="reflectkit-result"')
    assert "stop: passed" in live.data["text/html"]
    progress = [page for page in client.updates if "reflectkit-live" in page]
    assert any("critique: judging draft 1" in page for page in progress)
    assert any("Revision 2" in page for page in progress)
    assert "".join(o.get("text", "") for o in code[2].outputs).strip() == "4 passed"

    # The export cell: the passed runs as tagged fine-tuning data.
    printed = "".join(o.get("text", "") for o in code[3].outputs)
    assert "ExportReport(read=2, written=2, skipped={})" in printed
    assert "<reflection>\n7 - 3 is 4, not 5.\n</reflection>" in printed
    assert printed.rstrip().endswith("<output>\n4\n</output>")


def test_a_kernel_is_installed_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setattr(KernelSpecManager, "find_kernel_specs", lambda self: {})
    assert _kernel(tmp_path, monkeypatch) == "python3"
    spec = tmp_path / "kernel" / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    assert spec.is_file()
