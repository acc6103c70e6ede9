"""Execute the book's chapters with papermill.

    python scripts/execute_chapters.py --profile converged --in-place  # the main job: outputs into the sources
    python scripts/execute_chapters.py --profile ci --out-dir build/ci  # tests: executed copies elsewhere
    python scripts/execute_chapters.py --only 04_bd --out-dir build/try -p model '"neumf"'

Each chapter gets `profile` and `device` injected into its `parameters` cell, and each -p NAME VALUE
goes to the chapters whose `parameters` cell defines NAME. An unknown chapter or a parameter that no
selected chapter defines is refused (exit 2) with the valid names. In place, a chapter is executed into
a temporary file and only replaces its source when it ran without error. The cell papermill injects is
tagged `remove-cell`, so the book does not render it.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "book" / "chapters"
ALWAYS = ("profile", "device")          # injected into every chapter


class UsageError(Exception):
    """Bad command line: the message names the problem and the valid choices."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="converged", choices=["ci", "quick", "converged", "paper"])
    ap.add_argument("--device", default="auto")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--in-place", action="store_true", help="write outputs into book/chapters")
    where.add_argument("--out-dir", type=Path, help="write executed copies here")
    ap.add_argument("--only", nargs="*", help="chapter names, e.g. 04_bd (default: all)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a chapter parameter (value parsed as a Python literal when possible)")
    return ap.parse_args(argv)


def select_chapters(only: list[str] | None, chapters_dir: Path = CHAPTERS) -> list[Path]:
    """The chapter notebooks to run; an unknown name is a UsageError listing the valid ones."""
    notebooks = sorted(p for p in chapters_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise UsageError(f"no chapters found in {chapters_dir}")
    if not only:
        return notebooks
    by_name = {nb.stem: nb for nb in notebooks}
    unknown = [n for n in only if Path(n).stem not in by_name]
    if unknown:
        raise UsageError(f"unknown chapter(s) {', '.join(unknown)}; valid chapters: {', '.join(by_name)}")
    return [by_name[Path(n).stem] for n in dict.fromkeys(only)]


def chapter_parameters(nb: Path) -> list[str]:
    """Names defined in a chapter's `parameters` cell (what papermill can set)."""
    import papermill as pm
    return list(pm.inspect_notebook(str(nb)))


def assign_parameters(notebooks: list[Path], extra: dict[str, object], common: dict[str, object]
                      ) -> dict[Path, dict[str, object]]:
    """Per chapter, the parameters to inject: `common` everywhere, each extra one where it is defined.

    A name that no selected chapter defines is a UsageError listing each chapter's parameters.
    """
    defined = {nb: chapter_parameters(nb) for nb in notebooks}
    unknown = [k for k in extra if not any(k in names for names in defined.values())]
    if unknown:
        valid = "; ".join(f"{nb.stem}: {', '.join(names)}" for nb, names in defined.items())
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)}; valid parameters: {valid}")
    return {nb: {**common, **{k: v for k, v in extra.items() if k in names}} for nb, names in defined.items()}


def hide_injected(path: Path) -> None:
    """Tag papermill's injected-parameters cell `remove-cell` so the book does not show it."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    if changed:
        nbformat.write(nb, str(path))


def execute(nb: Path, out: Path, params: dict[str, object]) -> None:
    """Run one chapter with papermill into `out` (its cwd is the chapters folder)."""
    import papermill as pm
    pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent), progress_bar=False)
    hide_injected(out)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        notebooks = select_chapters(a.only)
        extra = {k: _literal(v) for k, v in a.param}
        plan = assign_parameters(notebooks, extra, {"profile": a.profile, "device": a.device})
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for nb in notebooks:
        params = plan[nb]
        t0 = time.perf_counter()
        print(f"executing {nb.relative_to(ROOT)} with {params}", flush=True)
        if a.in_place:
            fd, tmp = tempfile.mkstemp(dir=nb.parent, prefix=f".{nb.stem}.", suffix=".ipynb")
            os.close(fd)
            try:
                execute(nb, Path(tmp), params)
                os.chmod(tmp, 0o644)             # mkstemp makes 0600; chapters are shared
                os.replace(tmp, nb)
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            a.out_dir.mkdir(parents=True, exist_ok=True)
            execute(nb, a.out_dir / nb.name, params)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


def _literal(v: str) -> object:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


if __name__ == "__main__":
    sys.exit(main())
