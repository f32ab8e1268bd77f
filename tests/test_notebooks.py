"""The notebooks execute top to bottom (with fewer training steps than a reader would run)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


# The quickstart notebook runs in every suite; the image, JEM, text and speech notebooks (about a
# minute or more each on 2 cores, mostly compilation; their code is tested in the experiments'
# tests) run in `make test-all`, which keeps the default suite within its time.
SLOW = {"images.ipynb", "jem.ipynb", "text.ipynb", "speech.ipynb"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=pytest.mark.slow) if path.name in SLOW else path
        for path in NOTEBOOKS
    ],
    ids=lambda path: path.name,
)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAXEBM_NOTEBOOK_STEPS", "60")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), "no figure was drawn"


def test_notebooks_exist():
    assert {"quickstart.ipynb", "images.ipynb", "jem.ipynb", "text.ipynb", "speech.ipynb"} <= {
        path.name for path in NOTEBOOKS
    }
