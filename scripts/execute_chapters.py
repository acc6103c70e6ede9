"""Execute the book's chapters with papermill.

    python scripts/execute_chapters.py --profile quick --in-place      # the main job: outputs into the sources
    python scripts/execute_chapters.py --profile ci --out-dir build/ci  # tests: executed copies elsewhere

Each chapter gets `profile` and `device` injected into its `parameters` cell. In place, a chapter is
executed into a temporary file and only replaces its source when it ran without error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "book" / "chapters"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=["ci", "quick", "paper"])
    ap.add_argument("--device", default="auto")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--in-place", action="store_true", help="write outputs into book/chapters")
    where.add_argument("--out-dir", type=Path, help="write executed copies here")
    ap.add_argument("--only", nargs="*", help="chapter file names (default: all)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="extra parameter for every chapter (value parsed as a Python literal when possible)")
    a = ap.parse_args()
    params = {"profile": a.profile, "device": a.device, **{k: _literal(v) for k, v in a.param}}
    notebooks = sorted(CHAPTERS.glob("*.ipynb"))
    if a.only:
        notebooks = [nb for nb in notebooks if nb.name in a.only or nb.stem in a.only]
    if not notebooks:
        print(f"no chapters found in {CHAPTERS}", file=sys.stderr)
        return 2
    for nb in notebooks:
        t0 = time.perf_counter()
        print(f"executing {nb.relative_to(ROOT)} with {params}", flush=True)
        if a.in_place:
            fd, tmp = tempfile.mkstemp(dir=nb.parent, prefix=f".{nb.stem}.", suffix=".ipynb")
            os.close(fd)
            try:
                pm.execute_notebook(str(nb), tmp, parameters=params, cwd=str(nb.parent), progress_bar=False)
                os.replace(tmp, nb)
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            a.out_dir.mkdir(parents=True, exist_ok=True)
            pm.execute_notebook(str(nb), str(a.out_dir / nb.name), parameters=params, cwd=str(nb.parent),
                                progress_bar=False)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


def _literal(v: str):
    import ast
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


if __name__ == "__main__":
    sys.exit(main())
