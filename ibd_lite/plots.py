"""Figure style of the book: figures sized for the text column (6.5 in wide, 150 dpi), a seaborn theme,
and LaTeX-style labels (matplotlib mathtext) shared by every chapter."""

from __future__ import annotations

WIDTH = 6.5      # inches: the book's text column
DPI = 150

# One label per quantity, written as the notation page writes it.
LABELS = {
    "p_ts": r"$p_{T\to S}$",
    "p_st": r"$p_{S\to T}$",
    "w_a": r"$w^a_j$ (position)",
    "w_b": r"$w^b_j$ (discrepancy)",
    "w": r"$w_j \propto w^a_j\, w^b_j$",
    "rank_t": r"teacher rank $\mathrm{rank}_T$",
    "rank_s": r"student rank $\mathrm{rank}_S$",
    "gap": r"rank gap $\Delta = \mathrm{rank}_S - \mathrm{rank}_T$",
}


def set_style() -> None:
    """Seaborn theme, column-sized figures at 150 dpi, Computer Modern mathtext, PNG output."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=1.0)   # labels stay legible on a phone
    mpl.rcParams.update({
        "figure.figsize": (WIDTH, 3.2), "figure.dpi": DPI, "savefig.dpi": DPI,
        "savefig.bbox": "tight", "mathtext.fontset": "cm", "axes.titlesize": "medium",
        "legend.fontsize": "small", "legend.title_fontsize": "small",
    })
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("png")
    except ImportError:           # pragma: no cover - outside Jupyter
        pass


def figsize(height: float = 3.2, width: float = WIDTH) -> tuple[float, float]:
    """(width, height) in inches for a column-wide figure."""
    return (width, height)


def learning_curves(curves, plateaus: dict, warmup_end: int, metrics=("N@50", "H@50"), height: float = 5.0,
                    budget_end: int | None = None):
    """Validation curves of every table row (teachers above, students below, as far as the curves hold them;
    one column per metric), a dotted line at the end of the warm-up, a dashed one at `budget_end` (e.g. the
    table's budget under longer runs) and a triangle at each row's plateau epoch (`plateaus[metric]`, a
    `curves.plateau_table`). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = list(dict.fromkeys(curves["row"]))
    palette = dict(zip(rows, sns.color_palette("tab10", len(rows))))
    roles = [r for r in ("teacher", "student") if r in set(curves["role"])]
    fig, axes = plt.subplots(len(roles), len(metrics), figsize=figsize(height * len(roles) / 2), sharex=True,
                             squeeze=False)
    for i, role in enumerate(roles):
        sub = curves[curves["role"] == role]
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            sns.lineplot(sub, x="epoch", y=metric, hue="row", palette=palette, lw=1, ax=ax,
                         legend=j == len(metrics) - 1)
            for row, g in sub.groupby("row", sort=False):
                e = plateaus[metric].loc[row, "plateau epoch"]
                ax.plot(e, g.loc[g["epoch"] == e, metric].iloc[0], "v", color=palette[row], ms=7, mec="black",
                        mew=0.5)
            ax.axvline(warmup_end, color="grey", ls=":", lw=1)
            if budget_end is not None:
                ax.axvline(budget_end, color="grey", ls="--", lw=1)
            ax.set_ylabel(f"validation {metric}")
            if j == len(metrics) - 1:
                ax.legend(title=f"{role}s", loc="lower right", fontsize="x-small", title_fontsize="x-small")
    fig.tight_layout()
    return fig


def probe_curves(base_run: dict, probe_runs, labels, role: str = "student", metric: str = "N@50",
                 height: float = 3.2):
    """Validation `metric` of one seed's table run of `role` and of its budget probes (labels: one per probe,
    e.g. from `curves.probe_label`) over the epochs, warm-up included. Returns the figure."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from .curves import history_frame, total_epochs

    frames = [history_frame(r, role).assign(run=label)
              for r, label in [(base_run, "table run"), *zip(probe_runs, labels)]]
    fig, ax = plt.subplots(figsize=figsize(height))
    sns.lineplot(pd.concat(frames, ignore_index=True), x="epoch", y=metric, hue="run", lw=1, ax=ax)
    ax.axvline(total_epochs(base_run["config"]), color="grey", ls=":", lw=1)
    ax.set_ylabel(f"validation {metric}")
    ax.legend(title=f"{role} alone", fontsize="x-small", title_fontsize="x-small")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------ paired intervals (chapters 4 and 5)
VERDICT_COLORS = {"ahead": "tab:green", "behind": "tab:red", "n.d.": "tab:grey"}


def paired_ci_plot(frame, ax=None, label: str = "B vs A"):
    """Forest plot of paired tests (`ibd_lite.analysis.paired_frame`): per line its change in % of A with
    the 95% interval, coloured by verdict, one marker per metric; the dashed line is no difference."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ax = ax or plt.gca()
    f = frame.reset_index(drop=True)
    labels = list(dict.fromkeys(f[label]))
    metrics = list(dict.fromkeys(f["metric"]))
    step = 0.6 / max(len(metrics), 1)
    f = f.assign(y=[labels.index(v) + step * (metrics.index(m) - (len(metrics) - 1) / 2)
                    for v, m in zip(f[label], f["metric"])])
    ax.hlines(f["y"], f["lo %"], f["hi %"], colors=[VERDICT_COLORS.get(v, "black") for v in f["verdict"]], lw=2)
    sns.scatterplot(f, x="change %", y="y", hue="verdict", style="metric", palette=VERDICT_COLORS,
                    hue_order=[v for v in VERDICT_COLORS if v in set(f["verdict"])], s=60, zorder=3, ax=ax)
    ax.axvline(0, color="black", ls="--", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set(xlabel="B − A, % of A (95% CI over users)", ylabel="")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", frameon=False)
    return ax
