"""The committed chapters read cleanly: scaffolding, widths, hidden boilerplate, glued numbers, figures."""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
import yaml

from ibd_lite.book import colab_cell_source

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("[0-9]*.ipynb"))
WIDTH = 100


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _text_outputs(cell: dict):
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            yield "".join(out["text"])
        elif "data" in out and "text/plain" in out["data"] and "scrapbook" not in out.get("metadata", {}):
            yield "".join(out["data"]["text/plain"])


@pytest.fixture(params=CHAPTERS, ids=lambda p: p.stem)
def chapter(request) -> dict:
    return _nb(request.param)


def test_there_are_seven_chapters():
    assert [p.stem for p in CHAPTERS] == ["01_data", "02_teachers_students", "03_unidirectional", "04_bd",
                                          "05_ibd", "06_tables", "07_analyses"]


def test_summary_exercises_solutions_and_notation_link(chapter):
    text = "\n".join(_src(c) for c in chapter["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in text
    exercises = re.findall(r"```\{exercise\}\n:label: (\S+)", text)
    solutions = re.findall(r"```\{solution\} (\S+)\n:class: dropdown", text)
    assert len(exercises) >= 2 and sorted(solutions) == sorted(exercises)
    assert "../notation" in text
    assert re.search(r"Set `\w+ = [^`]+` in the parameters cell", text), "an exercise that changes a parameter"


def test_no_code_line_or_text_output_wider_than_the_column(chapter):
    for cell in chapter["cells"]:
        if cell["cell_type"] != "code":
            continue
        for line in _src(cell).splitlines():
            assert len(line) <= WIDTH, line
        for text in _text_outputs(cell):
            for line in text.splitlines():
                assert len(line) <= WIDTH, line


def test_no_visible_boilerplate(chapter):
    cells = chapter["cells"]
    assert _src(cells[0]) == colab_cell_source() and "remove-cell" in _tags(cells[0])
    injected = [c for c in cells if "injected-parameters" in _tags(c)]
    assert len(injected) == 1 and "remove-cell" in _tags(injected[0])
    assert sum("parameters" in _tags(c) for c in cells) == 1
    for cell in cells:
        src = _src(cell)
        assert "NBVAL" not in src
        if cell["cell_type"] == "code" and "remove-cell" not in _tags(cell):
            assert not src.lstrip().startswith("assert") and "\nassert " not in src, src[:80]
    setup = cells[cells.index(injected[0]) + 1]            # the imports and set-up: collapsed
    assert "import" in _src(setup) and "hide-input" in _tags(setup)
    last = cells[-1]                                        # the provenance: collapsed
    assert "provenance" in _src(last) and {"remove-input", "hide-output"} <= set(_tags(last))


def test_no_references_to_documents_the_reader_does_not_have(chapter):
    text = "\n".join(_src(c) for c in chapter["cells"] if c["cell_type"] == "markdown").lower()
    for phrase in ("specification", "section 6", "spec §", "spec.md"):
        assert phrase not in text


def test_outputs_have_no_nan_and_no_float_counts(chapter):
    for cell in chapter["cells"]:
        for text in _text_outputs(cell):
            assert "NaN" not in text and "<NA>" not in text, text[:200]
            assert not re.search(r"\b\d{4,}\.0\b", text), text[:200]


def test_every_glued_name_used_in_the_prose_is_stored(chapter):
    used = set()
    for c in chapter["cells"]:
        if c["cell_type"] == "markdown":
            used |= set(re.findall(r"\{glue:(?:text|md)\}`([\w]+)", _src(c)))
    stored = {o["metadata"]["scrapbook"]["name"] for c in chapter["cells"] for o in c.get("outputs", [])
              if "scrapbook" in o.get("metadata", {})}
    assert used, "the prose quotes the run's numbers"
    assert used <= stored, sorted(used - stored)


def _png_size(b64: str) -> tuple[int, int]:
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def test_figures_are_column_sized_at_150_dpi(chapter):
    sizes = [_png_size(o["data"]["image/png"]) for c in chapter["cells"] for o in c.get("outputs", [])
             if "image/png" in o.get("data", {})]
    assert sizes, "every chapter has a figure"
    for w, h in sizes:
        assert 6.0 * 150 <= w <= 7.2 * 150, (w, h)       # 6–7 inches at 150 dpi (tight bounding box)


def test_chapters_were_executed_at_converged_without_errors(chapter):
    assert chapter["metadata"]["papermill"]["parameters"]["profile"] == "converged"
    for cell in chapter["cells"]:
        assert all(o["output_type"] != "error" for o in cell.get("outputs", []))


def test_the_build_ignores_virtual_environments_and_lists_the_notation_page():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    for pattern in (".venv/*", "venv/*", "**/site-packages/*"):
        assert pattern in cfg["exclude_patterns"]
    assert "sphinx_exercise" in cfg["sphinx"]["extra_extensions"]
    toc = (ROOT / "_toc.yml").read_text()
    assert "book/notation" in toc and (ROOT / "book" / "notation.md").exists()
