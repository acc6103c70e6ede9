"""Helpers for the book's chapters: the repository's address (held here only), the Colab set-up cell,
chapter set-up, time estimates before training, glued numbers, readable tables and inference timing.

    python -m ibd_lite.book sync     # write REPO_URL into _config.yml, README.md, book/ and the chapters
    python -m ibd_lite.book check    # exit 1 when any of them names another address
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

# The one place that names the book's repository: Colab cells, launch buttons and the README are written from it.
REPO_URL = "https://github.com/ibd-book/ibd-book"
REPO_BRANCH = "main"
COLAB_DIR = "/content/ibd-book"
ROOT = Path(__file__).resolve().parent.parent
# Config fields that do not change what a run computes, or only its speed: ignored when matching timings.
_NOT_TIMING = ("seed", "device", "extra", "data_dir")


def colab_url(chapter: str) -> str:
    """Colab link of a chapter notebook, e.g. colab_url("04_bd")."""
    path = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{REPO_BRANCH}/book/chapters/{chapter}.ipynb"


def colab_cell_source() -> str:
    """Source of every chapter's first cell: on Colab, clone and install the book's code; elsewhere nothing.

    It stops with a message naming the failed step (clone or install), and never reinstalls Colab's torch.
    """
    return f'''# On Colab: fetch the book's code and install it (keeps Colab's own torch). Elsewhere: does nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    REPO_URL, DEST = "{REPO_URL}", "{COLAB_DIR}"
    def _setup_step(what, cmd):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Set-up failed while {{what}} (exit {{done.returncode}}):\\n"
                               f"{{done.stderr.strip()[-1500:]}}\\nCheck the network and the "
                               "address above, then Runtime > Run all again.")
    if not os.path.isdir(os.path.join(DEST, ".git")):
        _setup_step(f"cloning {{REPO_URL}}", ["git", "clone", "-q", "--depth", "1", REPO_URL, DEST])
    from importlib.metadata import version
    keep_torch = f"torch=={{version('torch')}}"   # pins Colab's own torch: never replaced
    _setup_step("installing ibd_lite",
                [sys.executable, "-m", "pip", "install", "-q", "-e", DEST, keep_torch])
    sys.path.insert(0, DEST)'''


# --------------------------------------------------------------------------------------------- the address
_COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w.-]+)/")
_CONFIG_URL = re.compile(r"^(\s*url:\s*)(\S+)\s*$", re.M)
_CELL_URL = re.compile(r'REPO_URL, DEST = "([^"]+)"')


def _url_files(root: Path) -> list[Path]:
    """The existing files that name the repository (README, _config.yml, book pages, chapters)."""
    paths = [root / "README.md", root / "_config.yml", *sorted((root / "book").rglob("*.md")),
             *sorted((root / "book" / "chapters").glob("*.ipynb"))]
    return [p for p in paths if p.exists()]


def stale_repository_urls(root: "str | Path" = ROOT) -> list[str]:
    """Places under `root` that name a repository other than REPO_URL (empty when all agree)."""
    root, want = Path(root), REPO_URL.removeprefix("https://github.com/")
    bad = []
    for path in _url_files(root):
        text = path.read_text()
        for repo, branch in _COLAB_LINK.findall(text):
            if repo != want or branch != REPO_BRANCH:
                bad.append(f"{path.relative_to(root)}: Colab link to {repo}@{branch}")
        if path.name == "_config.yml":
            bad += [f"{path.name}: repository url {u}" for _, u in _CONFIG_URL.findall(text) if u != REPO_URL]
        if path.suffix == ".ipynb":
            first = "".join(json.loads(text)["cells"][0]["source"])
            if first != colab_cell_source():
                bad.append(f"{path.relative_to(root)}: first cell is not ibd_lite.book.colab_cell_source()")
    return bad


def sync_repository_url(root: "str | Path" = ROOT) -> list[Path]:
    """Rewrite every place that names the repository from REPO_URL; returns the files changed."""
    root, want = Path(root), REPO_URL.removeprefix("https://github.com/")
    changed = []
    for path in _url_files(root):
        text = path.read_text()
        if path.suffix == ".ipynb":
            nb = json.loads(text)
            nb["cells"][0]["source"] = colab_cell_source().splitlines(keepends=True)
            new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        else:
            new = _COLAB_LINK.sub(f"https://colab.research.google.com/github/{want}/blob/{REPO_BRANCH}/", text)
            if path.name == "_config.yml":
                new = _CONFIG_URL.sub(lambda m: m.group(1) + REPO_URL, new, count=1)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


# ------------------------------------------------------------------------------------------ chapter set-up
@dataclass
class Chapter:
    """What every chapter's set-up cell resolves: the run settings, the config and where results live."""

    base: dict[str, Any]
    over: dict[str, Any]
    cfg: Any
    out_dir: Path
    t_start: float = field(default_factory=time.perf_counter)

    def configs(self, *variants: dict[str, Any]) -> list[dict[str, Any]]:
        """Full run configs of this chapter's settings, one per variant (e.g. {"method": "bd"})."""
        return [dict(self.base, **self.over, **v) for v in variants]

    def runs(self, *variants: dict[str, Any]) -> list[dict]:
        """Run (or reuse) the variants, with a time estimate and a progress bar when anything must train."""
        return run_with_estimate(self.configs(*variants), self.out_dir)

    def seeds_in_store(self, seeds: Sequence[int], *variants: dict[str, Any], required: bool = True) -> list[int]:
        """The seeds this chapter shows. Profile `converged` never trains inside the book (its runs take
        hours; `python -m ibd_lite reproduce --only chapters` trains them), so there only the seeds whose
        runs of every variant (default: every method of the table) are finished; any other profile trains
        what is missing, so all of `seeds`. None finished is an error, or an empty list if not `required`."""
        seeds = [int(s) for s in seeds]
        if self.cfg.profile != "converged":
            return seeds
        variants = variants or tuple({"method": m} for m in table_methods())
        done = [s for s in seeds
                if all(_finished(c, self.out_dir)[1] for c in self.configs(*({**v, "seed": s} for v in variants)))]
        if not done and required:
            names = ", ".join(sorted({_variant_name(v) for v in variants}))
            raise FileNotFoundError(
                f"no seed of {seeds} has finished converged runs of {names} in {_short(self.out_dir)}. Train "
                "them with `python -m ibd_lite reproduce --only chapters` (hours on a CPU), or set "
                'profile = "quick" in the parameters cell for a result in minutes.')
        return done

    def warmup_models(self, split) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The warm-up teacher and student (cached; trained first when missing, with a time estimate)."""
        from .methods import Context, pretrain, pretrain_key
        from .runner import default_cache_dir
        from .sampling import UnobservedSampler

        dev = torch.device(self.cfg.device)
        c = self.cfg
        names = [f"{c.dataset}-{c.model}-{role}-{pretrain_key(c, role, dev)}.pt" for role in ("teacher", "student")]
        cached = all((default_cache_dir() / name).exists() for name in names)
        if not cached:
            took = warmup_seconds(self.out_dir, c)
            print("The warm-up models are not cached yet: training them now"
                  + (f" (measured before: about {format_duration(took)})." if took else "."), flush=True)
        ctx = Context(self.cfg, split, dev, UnobservedSampler(split, dev), progress=False,
                      cache_dir=default_cache_dir())
        teacher, student = (pretrain(ctx, role)[0].eval() for role in ("teacher", "student"))
        return teacher, student

    def comparison(self, seeds: Sequence[int], n_boot: int = 10_000,
                   metrics: Sequence[str] = ("H@50", "N@50")) -> "Comparison":
        """The full comparison at equal budget (SPEC §8): Teacher, Student, RD, CD, BD and iBD on `seeds`
        (reused from the results store, trained when missing), the 8-row table and the paired intervals."""
        from . import report
        from .experiments import run_name

        results = self.runs(*({"method": m, "seed": int(s)} for s in seeds for m in table_methods()))
        runs = [report.Run(self.out_dir / run_name(r["config"]), r) for r in results]
        rows = report.table_rows(runs, self.cfg.dataset, self.cfg.model, defaults_only=False)
        return Comparison.from_rows(rows, n_boot, metrics)

    def probe_runs(self, name: str = "budget", seeds: Sequence[int] = (0,), train: bool = True) -> list[dict]:
        """The runs of a probe experiment (`experiments.PROBE_EXPERIMENTS`) on this chapter's cell, stored in
        `<results>/<name>/`. As with the tables, profile `converged` only reuses finished runs: per seed and
        method, only when every probe of that method is finished (empty list when none is: `python -m ibd_lite
        grid <name> --profile converged --out-dir results/converged/<name>` trains them); any other profile
        trains what is missing, unless `train=False` (a chapter that only shows what another one trained)."""
        from .experiments import experiment_configs

        configs = experiment_configs(name, profile=self.cfg.profile, dataset=self.cfg.dataset, model=self.cfg.model,
                                     seeds=[int(s) for s in seeds], device=self.base["device"], **self.over)
        out = self.out_dir / name
        if self.cfg.profile == "converged" or not train:
            missing = {(c["seed"], c["method"]) for c in configs if not _finished(c, out)[1]}
            configs = [c for c in configs if (c["seed"], c["method"]) not in missing]
            if not configs:
                return []
        return run_with_estimate(configs, out)

    def provenance(self) -> None:
        """Print where this page's numbers came from: code commit, versions, device, elapsed time."""
        from .provenance import provenance

        p = provenance(self.cfg.device)
        dirty = " (with uncommitted changes)" if p["dirty"] else ""
        print(f"code: ibd_lite at commit {p['commit'][:12]}{dirty}\n"
              f"torch {p['torch']}, Python {p['python']}, device {p['device']}: {p['device_name']}\n"
              f"profile {self.cfg.profile!r}, executed {p['time_utc']} in "
              f"{time.perf_counter() - self.t_start:.1f} s")


def table_methods() -> list[str]:
    """The methods behind the 8-row comparison table, in order (teacher, student, rd, cd, bd, ibd)."""
    from .experiments import TABLE_METHODS

    return list(TABLE_METHODS)


def _variant_name(v: dict[str, Any]) -> str:
    return " ".join(str(x) for x in (v.get("method"), v.get("ibd_variant"), v.get("bd_direction")) if x)


def seeds_note(used: Sequence[int], asked: Sequence[int], what: str = "comparison", needed: int = 5) -> str:
    """One Markdown sentence on the seeds a comparison rests on, marked provisional when some of the
    seeds asked for have not finished or fewer than `needed` are in it (SPEC §8 asks for 5)."""
    used, asked = list(used), list(asked)
    if not used:
        return (f"**Not run yet:** no seed of this {what} has finished training (asked for: "
                f"{', '.join(map(str, asked))}); `python -m ibd_lite reproduce --only chapters` trains them.")
    seeds = ", ".join(map(str, used))
    if len(used) >= needed and len(used) == len(asked):
        return f"This {what} rests on {len(used)} seeds ({seeds})."
    missing = [s for s in asked if s not in used]
    why = (f"seed{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} {'have' if len(missing) > 1 else 'has'} "
           "not finished training yet" if missing else f"the book's verdicts need at least {needed}")
    return (f"**Provisional:** this {what} rests on {len(used)} of the {len(asked)} seeds asked for "
            f"({seeds}; {why}). The protocol (SPEC §8) wants {needed} before a verdict counts: read these "
            "as a first look, not a finding.")


def glue_key(*parts: Any) -> str:
    """A glue name from labels: 'iBD-Student', 'H@50' -> 'iBD_Student_H50'."""
    return "_".join(re.sub(r"[^0-9A-Za-z]+", "_", str(p).replace("@", "")).strip("_") for p in parts)


@dataclass
class Comparison:
    """A chapter's comparison table: the runs per row, mean ± sd over seeds, seed means, paired tests."""

    rows: dict[str, list]
    table: Any            # pandas: one line per row, "mean ± sd" per metric, seeds
    means: Any            # pandas: seed means per row and metric (floats)
    tests: Any            # pandas: paired differences B − A with 95% CI, change %, p, verdict
    provenance: Any       # pandas: commits and code fingerprints per row

    @classmethod
    def from_rows(cls, rows: dict[str, list], n_boot: int = 10_000,
                  metrics: Sequence[str] = ("H@50", "N@50")) -> "Comparison":
        """Tables and paired tests of checked table rows (`ibd_lite.report.table_rows`)."""
        from . import report

        return cls(rows, report.summary(rows), report.means(rows),
                   report.comparisons(rows, metrics=metrics, n_boot=n_boot), report.provenance_of(rows))

    @property
    def n_seeds(self) -> int:
        return min(len(rs) for rs in self.rows.values())

    def test(self, b: str, a: str, metric: str = "H@50") -> dict[str, Any]:
        """The paired comparison of row b against row a on one metric."""
        hit = self.tests[(self.tests["B vs A"] == f"{b} vs {a}") & (self.tests["metric"] == metric)]
        if hit.empty:
            raise KeyError(f"no paired comparison {b} vs {a} on {metric}; have: {sorted(set(self.tests['B vs A']))}")
        return hit.iloc[0].to_dict()

    def sentence(self, b: str, a: str, metric: str = "H@50") -> str:
        """'ahead of X (+4.1 %, 95% CI of the difference [+0.0012, +0.0061])' -- words from the interval."""
        from .report import sentence

        return sentence(self.test(b, a, metric), a)

    def best_student(self) -> str:
        """The student row (iBD's excluded) with the highest mean H@50."""
        from .report import STUDENT_ROWS

        return max((r for r in STUDENT_ROWS if r in self.rows), key=lambda r: self.means.loc[r, "H@50"])

    def glue_all(self, prefix: str = "") -> None:
        """Glue every seed mean ({prefix}mean_<row>_<metric>, 4 decimals) and every paired test
        ({prefix}<B>_vs_<A>_<metric>: sentence; _pct; _verdict) for the prose."""
        from .report import verdict_words

        glue(prefix + "n_seeds", self.n_seeds)
        glue(prefix + "n_seeds_text", f"{self.n_seeds} seed{'s' * (self.n_seeds != 1)}")
        for row in self.means.index:
            for metric in self.means.columns:
                glue(prefix + glue_key("mean", row, metric), float(self.means.loc[row, metric]), ".4f")
        for _, t in self.tests.iterrows():
            b, a = t["B vs A"].split(" vs ")
            k = prefix + glue_key(b, "vs", a, t["metric"])
            glue(k, self.sentence(b, a, t["metric"]))
            glue(k + "_pct", float(t["change %"]), "+.1f")
            glue(k + "_verdict", verdict_words(t["verdict"]))


def start_chapter(profile: str, device: str, model: str, seed: int, dataset: str | None = None,
                  epochs: int | None = None, method: str = "teacher", **overrides: Any) -> Chapter:
    """Set up a chapter: figure style, the resolved config and the results folder.

    `epochs` and the overrides (config fields) apply to every run of the chapter; None means the default.
    """
    from . import make_config
    from .plots import set_style

    set_style()
    base = dict(profile=profile, device=device, model=model, seed=seed)
    if dataset is not None:
        base["dataset"] = dataset
    over = {k: v for k, v in dict(epochs=epochs, **overrides).items() if v is not None}
    cfg = make_config(**base, **over, method=method)
    return Chapter(base, over, cfg, ROOT / "results" / cfg.profile)


# ------------------------------------------------------------------------------------------ time estimates
def _timing_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in _NOT_TIMING}, sort_keys=True)


def measured_seconds(results_dir: "str | Path") -> dict[str, list[tuple[float, str]]]:
    """Recorded wall times of the finished runs in a folder: timing key -> [(seconds, device name)]."""
    out: dict[str, list[tuple[float, str]]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            r = json.loads(path.read_text())
            secs, where = float(r["timing"]["total_s"]), r.get("provenance", {}).get("device_name", "?")
            key = _timing_key(r["config"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.setdefault(key, []).append((secs, where))
    return out


def warmup_seconds(results_dir: "str | Path", cfg: Any) -> float:
    """Recorded time to train the warm-up teacher and student of cfg's dataset, model and profile (0: none)."""
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            r = json.loads(path.read_text())
            c = r["config"]
            if (c["dataset"], c["model"], c["profile"], c["seed"]) != (cfg.dataset, cfg.model, cfg.profile,
                                                                       cfg.seed):
                continue
            pre = r["pretrain"]
            if {"teacher", "student"} <= set(pre):
                return float(sum(pre[k]["seconds_train"] + pre[k]["seconds_eval"] for k in ("teacher", "student")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 0.0


@dataclass
class Plan:
    """Which runs are finished, which must train, and how long the latter took when measured before."""

    finished: list[dict[str, Any]]
    todo: list[dict[str, Any]]
    estimate_s: float          # sum of the median measured time of each run to do (0 when none measured)
    unmeasured: int            # runs to do with no measured timing of the same configuration
    measured_on: list[str]

    def message(self, out_dir: "str | Path") -> str:
        """One or two lines for the reader, printed before anything trains."""
        n = len(self.finished) + len(self.todo)
        if not self.todo:
            if n == 1:
                return f"The run this step needs is finished in {_short(out_dir)} and is reused."
            return f"All {n} runs this step needs are finished in {_short(out_dir)} and are reused."
        msg = f"{len(self.todo)} of {n} runs must train now ({len(self.finished)} reused from {_short(out_dir)})."
        if self.estimate_s > 0:
            on = ", ".join(sorted(set(self.measured_on)))
            msg += (f"\nExpected time: about {format_duration(self.estimate_s)}, from timings measured on {on}"
                    + (f" ({self.unmeasured} run(s) never measured, not counted)." if self.unmeasured else "."))
        else:
            msg += "\nNo timing of these configurations was measured before: the time is unknown."
        return msg


def _finished(config: dict[str, Any], out_dir: "str | Path") -> tuple[dict[str, Any], bool]:
    """The full config of a chapter's run settings, and whether its finished result is in `out_dir`."""
    from .config import make_config
    from .experiments import run_name
    from .runner import is_finished, load_result

    full = make_config(**config).to_dict()
    return full, is_finished(load_result(Path(out_dir) / run_name(full)), full)


def plan_runs(configs: Iterable[dict[str, Any]], out_dir: "str | Path") -> Plan:
    """Split configs into finished and to-do runs and estimate the to-do time from recorded timings."""
    finished, todo, total, unmeasured, where = [], [], 0.0, 0, []
    timings = measured_seconds(out_dir)
    for c in configs:
        full, done = _finished(c, out_dir)
        if done:
            finished.append(full)
            continue
        todo.append(full)
        seen = timings.get(_timing_key(full))
        if seen:
            total += statistics.median(s for s, _ in seen)
            where += [w for _, w in seen]
        else:
            unmeasured += 1
    return Plan(finished, todo, total, unmeasured, where)


def run_with_estimate(configs: Sequence[dict[str, Any]], out_dir: "str | Path") -> list[dict]:
    """Print what will train and how long it took before, then run the grid (progress bar when training)."""
    from .experiments import run_grid

    plan = plan_runs(configs, out_dir)
    print(plan.message(out_dir), flush=True)
    return run_grid(configs, out_dir, progress=bool(plan.todo))


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _short(path: "str | Path") -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


# ----------------------------------------------------------------------------------- numbers into the text
def glue(name: str, value: Any, fmt: str = "") -> str:
    """Store `value`, formatted with `fmt`, for the chapter's prose ({glue:text}`name`); returns the text.

    Off the book build (no myst_nb, e.g. on Colab) the text is only returned.
    """
    text = format(value, fmt)
    _store(name, text)
    return text


def glue_md(name: str, text: str) -> str:
    """Store Markdown (bold, links, ...) for the prose ({glue:md}`name`); returns the text."""
    from IPython.display import Markdown

    _store(name, Markdown(text))
    return text


def _store(name: str, value: Any) -> None:
    """myst-nb's glue, without display; off the book build (no myst_nb, e.g. on Colab) nothing is stored."""
    try:
        from myst_nb import glue as _glue
    except ImportError:           # pragma: no cover - Colab without myst_nb
        return
    _glue(name, value, display=False)


# ------------------------------------------------------------------------------------------ readable tables
def tidy(df, decimals: "int | dict[str, int]" = 4, int_columns: Sequence[str] = (), missing: str = "–"):
    """A copy of a DataFrame as text for reading: integers with thousands separators, floats with a
    fixed number of decimals (one number, or per column), missing values as a dash (no NaN / <NA>)."""
    import pandas as pd

    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype(object).where(s.notna(), missing).astype(str)
            continue
        whole = col in int_columns or pd.api.types.is_integer_dtype(s) or bool(
            s.dropna().map(lambda v: float(v).is_integer()).all() and s.dropna().abs().max() >= 1000)
        places = decimals.get(col, 4) if isinstance(decimals, dict) else decimals
        fmt = "{:,.0f}" if whole else f"{{:.{places}f}}"
        out[col] = [missing if pd.isna(v) else fmt.format(float(v)) for v in s]
    return out


# -------------------------------------------------------------------------------------- inference timing
@torch.no_grad()
def topk_latency(model: torch.nn.Module, split, k: int = 50, batch_users: int = 256, repeats: int = 5,
                 device: "torch.device | str" = "cpu") -> dict[str, float]:
    """Median milliseconds to return the top-k unseen items for one batch of users (score, mask, top-k)
    on one CPU thread (steadier on a shared machine), and the memory that needs: parameters and the
    batch's score matrix, in MB (float32)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _topk_latency(model, split, k, batch_users, repeats, torch.device(device))
    finally:
        torch.set_num_threads(threads)


def _topk_latency(model, split, k: int, batch_users: int, repeats: int, dev: torch.device) -> dict[str, float]:
    model = model.to(dev).eval()
    users = torch.arange(min(batch_users, split.n_users), device=dev)
    seen = split.train_mask(users.cpu()).to(dev)

    def once() -> None:
        scores = model.score_all(users).masked_fill(seen, float("-inf"))
        torch.topk(scores, k, dim=1)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    once()                                    # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in model.parameters())
    return {"batch_ms": 1e3 * statistics.median(times), "params": n_params,
            "params_mb": 4 * n_params / 2**20, "scores_mb": 4 * len(users) * split.n_items / 2**20}


def main(argv: Sequence[str] | None = None) -> int:
    """`sync` writes REPO_URL everywhere; `check` lists places that disagree (exit 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["sync"]:
        for p in sync_repository_url():
            print(f"updated {p.relative_to(ROOT)}")
        return 0
    if args == ["check"]:
        bad = stale_repository_urls()
        print("\n".join(bad) or f"every place names {REPO_URL}")
        return 1 if bad else 0
    print("usage: python -m ibd_lite.book sync|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
