"""Every experiment's results in one place, from each ``results/<experiment>/evaluation/metrics.json``
(written by ``poselift evaluate``) and the files beside it: a table (Markdown, CSV, HTML), one JSON file of the
headline numbers for ``dvc metrics show/diff``, and the figures a researcher reads (FIGURES): training curves per
stage (``stage<N>/history.json``), error per joint group (``evaluation/per_group.json``, POT's Fig. 3/4), MPJPE
per action (a heatmap) and test frames with predicted and ground-truth 3D skeletons
(``evaluation/predictions.npz``, ``targets.npz``). ``results.html`` is one self-contained page: the tables,
then every figure embedded. Experiments that train a 2D detector (task ``heatmaps``) get their own table: COCO
OKS AP/AR, PCK@0.05 and pixel error.

Seeds: run ``<base>-seed<k>`` (k >= 1) is experiment ``<base>`` with every stage's seed + k (:func:`run_base`);
runs of one base are shown as mean ± sample std (n - 1) over the runs, with n. :func:`write_bench` writes the
`bench` target's tables from params.yaml's ``bench`` section: each ablation's effect (variant - baseline,
paired by seed k) beside its paper's, and the attention paper's Table V (MPJPE per lifting model and 2D source,
2D AP per detector). A run that is not evaluated is "—" with a note, never a number.

The errors of the table are averaged over actions (each action's frames pooled first), the way the papers
report Human3.6M; "MPJPE (all frames)" is the mean over all frames. Lengths in mm, MPJVE in mm/frame, PCK and
AUC in %.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path

from poselift.errors import InputError
from poselift.io import atomic_output, read_json

ACTION_MEAN = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")  # averaged over actions when there are actions
OVERALL = ("pck150", "auc")
REQUIRED = ("frames", "mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck150", "auc", "per_action", "action_mean")
# (key of a table row, header, decimals; None = not a number)
COLUMNS = (
    ("experiment", "Experiment", None),
    ("dataset", "Dataset", None),
    ("detector", "2D", None),
    ("model", "Model", None),
    ("frames", "Frames", 0),
    ("mpjpe", "MPJPE (action mean)", 1),
    ("p_mpjpe", "P-MPJPE", 1),
    ("n_mpjpe", "N-MPJPE", 1),
    ("mpjve", "MPJVE", 2),
    ("pck150", "PCK@150", 1),
    ("auc", "AUC", 1),
    ("mpjpe_frames", "MPJPE (all frames)", 1),
    ("background_attention", "Background attention (%)", 1),
)

# The 2D detectors' table: (key of metrics.json, header, decimals; None = not a number)
DETECTOR_COLUMNS = (
    ("experiment", "Experiment", None),
    ("dataset", "Dataset", None),
    ("model", "Model", None),
    ("samples", "Crops", 0),
    ("AP", "AP", 3),
    ("AP50", "AP50", 3),
    ("AP75", "AP75", 3),
    ("AR", "AR", 3),
    ("pck@0.05", "PCK@0.05", 3),
    ("mean_px", "Error (px)", 2),
)
DETECTOR_REQUIRED = tuple(k for k, _, d in DETECTOR_COLUMNS if d is not None)


@dataclass
class Result:
    experiment: str
    path: Path
    metrics: dict


def metrics_path(results: Path, experiment: str) -> Path:
    return Path(results) / experiment / "evaluation" / "metrics.json"


def collect(results: str | os.PathLike, experiments: list[str] | None = None) -> list[Result]:
    """The evaluations of ``experiments`` (default: every ``<results>/*/evaluation/metrics.json``, by name)."""
    results = Path(results)
    if experiments:
        paths = [(name, metrics_path(results, name)) for name in experiments]
    else:
        paths = [(p.parent.parent.name, p) for p in sorted(results.glob("*/evaluation/metrics.json"))]
        if not paths:
            raise InputError(results, "no evaluations found (expected <experiment>/evaluation/metrics.json)")
    out = []
    for name, path in paths:
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise InputError(path, "expected a JSON object of metrics (poselift evaluate's metrics.json)")
        if metrics.get("task") == "heatmaps":  # a 2D detector's evaluation
            missing = [k for k in DETECTOR_REQUIRED if not _is_number(metrics.get(k))]
            if missing:
                raise InputError(path, f"'{missing[0]}' is missing or not a finite number")
            out.append(Result(name, path, metrics))
            continue
        missing = [k for k in REQUIRED if k not in metrics]
        if missing:
            raise InputError(path, f"missing key '{missing[0]}' (not written by poselift evaluate?)")
        for key in ("frames", "mpjpe", "p_mpjpe", "n_mpjpe", "pck150", "auc"):
            if not _is_number(metrics[key]):
                raise InputError(path, f"'{key}' is {metrics[key]!r}, expected a finite number")
        if not isinstance(metrics["per_action"], dict) or not isinstance(metrics["action_mean"], dict):
            raise InputError(path, "'per_action' and 'action_mean' must be JSON objects")
        for action, row in metrics["per_action"].items():
            if not isinstance(row, dict) or not _is_number(row.get("mpjpe")):
                raise InputError(path, f"per_action '{action}': expected an object with a finite 'mpjpe'")
        out.append(Result(name, path, metrics))
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_detector(result: Result) -> bool:
    return result.metrics.get("task") == "heatmaps"


def detector_rows(results: list[Result]) -> list[dict]:
    """One row per 2D-detector experiment, keyed like DETECTOR_COLUMNS."""
    rows = []
    for r in results:
        if is_detector(r):
            inputs = r.metrics.get("inputs") or {}
            rows.append({"experiment": r.experiment,
                         "dataset": Path(inputs["prepared"]).stem if inputs.get("prepared") else "",
                         "model": str(inputs.get("model", "")),
                         **{k: r.metrics[k] for k in DETECTOR_REQUIRED}})
    return rows


def table_rows(results: list[Result]) -> list[dict]:
    """One row per lifting experiment, keyed like COLUMNS (numbers stay numbers; None where a metric is
    undefined)."""
    rows = []
    for r in results:
        if is_detector(r):
            continue
        m = r.metrics
        inputs = m.get("inputs") or {}
        use_actions = bool(m["per_action"])
        row = {
            "experiment": r.experiment,
            "dataset": Path(inputs["prepared"]).stem if inputs.get("prepared") else "",
            "detector": Path(inputs["detections"]).stem if inputs.get("detections") else "prepared",
            "model": str(inputs.get("model", "")),
            "frames": int(m["frames"]),
            "mpjpe_frames": float(m["mpjpe"]),
            # Lifting by Image ([L] Tables 1, 5): keypoint-to-image attention outside 30-px circles at the joints
            "background_attention": 100.0 * float(m["background_attention"]) if _is_number(
                m.get("background_attention")) else None,
        }
        for key in ACTION_MEAN:
            value = m["action_mean"].get(key) if use_actions else m[key]
            row[key] = float(value) if _is_number(value) else None
        for key in OVERALL:
            row[key] = float(m[key])
        rows.append(row)
    return rows


# --- seeds: run <base>-seed<k> is experiment <base> with every stage's seed + k -------------------------------

SEED_RUN = re.compile(r"^(.+)-seed([1-9][0-9]*)$")
# The headline columns aggregated over seeds: (key of a table row, header, decimals)
HEADLINE = tuple(c for c in COLUMNS if c[0] in ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck150", "auc"))
DASH = "—"  # a value that does not exist (yet): never a number


def run_base(name: str) -> tuple[str, int]:
    """``"pot-b-seed2"`` -> ``("pot-b", 2)``; a name without a seed suffix is run 0 of itself."""
    m = SEED_RUN.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def run_name(base: str, k: int) -> str:
    """The inverse of :func:`run_base`: run ``k`` of experiment ``base``."""
    return f"{base}-seed{k}" if k else base


def mean_std(values) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation (n - 1), n) of the values that are numbers; std is None below two
    values and mean is None for none."""
    values = [float(v) for v in values if _is_number(v)]
    if not values:
        return None, None, 0
    if len(values) == 1:
        return values[0], None, 1
    return statistics.fmean(values), statistics.stdev(values), len(values)


def format_mean_std(mean, std, decimals: int = 1) -> str:
    """"98.7 ± 1.2", "98.7" (one run: no spread), or "—" (none)."""
    if mean is None:
        return DASH
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def seed_groups(rows: list[dict]) -> list[dict]:
    """The rows of :func:`table_rows` grouped by base experiment (in order of first appearance): per group
    its runs, their seed offsets, n, the descriptive columns of its first run and (mean, std, n) of every
    HEADLINE column."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(run_base(row["experiment"])[0], []).append(row)
    out = []
    for base, members in groups.items():
        members = sorted(members, key=lambda r: run_base(r["experiment"])[1])
        group = {"experiment": base, "runs": [r["experiment"] for r in members],
                 "seeds": [run_base(r["experiment"])[1] for r in members], "n": len(members),
                 **{k: members[0][k] for k in ("dataset", "detector", "model")}}
        for key, _, _ in HEADLINE:
            group[key] = mean_std([r[key] for r in members])
        out.append(group)
    return out


# --- tables ---------------------------------------------------------------------------------------------------

def _cell(value, decimals) -> str:
    if value is None:
        return "-"
    return str(value) if decimals is None else f"{value:.{decimals}f}"


def _markdown_table(rows: list[dict], columns) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if d is None else "---:" for _, _, d in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[k], d) for k, _, d in columns) + " |")
    return "\n".join(lines) + "\n"


def _grid_markdown(header: list[str], rows: list[list[str]], align: list[bool]) -> str:
    """A Markdown table of ready-made cells; align[i]: right-align column i."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _footmarks(text: str) -> str:
    """[n] footnote marks as superscripts."""
    return re.sub(r"\[(\d+)\]", r"<sup>\1</sup>", text)


def _grid_html(header: list[str], rows: list[list[str]], align: list[bool], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    num = ' class="num"'
    body = "".join("<tr>" + "".join(f"<td{num if a else ''}>{_footmarks(html.escape(c))}</td>"
                                    for c, a in zip(row, align)) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


SEED_NOTE = ("Mean ± sample standard deviation (n - 1) over the seeded runs of each experiment (run <name>-seed<k> "
             "is <name> with every stage's seed + k); n runs. One run: no spread.")


def seed_table(groups: list[dict]) -> tuple[list[str], list[list[str]], list[bool]]:
    header = ["Experiment", "n", "Dataset", "2D", "Model"] + [h for _, h, _ in HEADLINE]
    rows = [[g["experiment"], str(g["n"]), g["dataset"], g["detector"], g["model"]]
            + [format_mean_std(*g[k][:2], d) for k, _, d in HEADLINE] for g in groups]
    return header, rows, [False, True, False, False, False] + [True] * len(HEADLINE)


DETECTOR_NOTE = ("2D detectors on the test split's crops: COCO OKS AP/AR (pycocotools), PCK@0.05 of the box, "
                 "mean error in frame pixels, over labelled joints.")
UNITS_NOTE = ("Errors in mm (MPJVE in mm/frame), averaged over actions; MPJPE (all frames): over all frames. "
              "PCK@150 and AUC in %, over all frames.")


def markdown(rows: list[dict], detectors: list[dict] = (), figures=()) -> str:
    """results.md: the tables, then links to ``figures`` (names of FIGURES written beside it)."""
    text = f"# Results\n\n{UNITS_NOTE}\n\n"
    groups = seed_groups(rows)
    if any(g["n"] > 1 for g in groups):
        text += f"## Over seeds\n\n{SEED_NOTE}\n\n" + _grid_markdown(*seed_table(groups)) + "\n## Every run\n\n"
    text += _markdown_table(rows, COLUMNS)
    if detectors:
        text += f"\n## 2D detectors\n\n{DETECTOR_NOTE}\n\n" + _markdown_table(detectors, DETECTOR_COLUMNS)
    if figures:
        text += "\n## Figures\n\n" + "".join(f"### {heading}\n\n{caption}\n\n![{heading}]({name})\n\n"
                                             for name, (_, heading, caption) in FIGURES.items()
                                             if name in figures)
    return text


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([k for k, _, _ in COLUMNS])
    for row in rows:
        writer.writerow(["" if row[k] is None else (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k])
                         for k, _, _ in COLUMNS])
    return buf.getvalue()


def _html_table(rows: list[dict], columns) -> str:
    return _grid_html([h for _, h, _ in columns], [[_cell(row[k], d) for k, _, d in columns] for row in rows],
                      [d is not None for _, _, d in columns])


CSS = ("body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1400px;margin:0 auto;"
       "padding:0 24px 48px;color:#222;line-height:1.4}h1{margin-top:24px}h2{margin-top:36px;"
       "border-bottom:1px solid #ccc;padding-bottom:4px}p.note{color:#555;max-width:1000px}"
       "table{border-collapse:collapse;font-size:14px;margin:8px 0}td,th{border:1px solid #bbb;"
       "padding:4px 10px}th{background:#f0f0f0;text-align:left}td.num{text-align:right;"
       "font-variant-numeric:tabular-nums;white-space:nowrap}tbody tr:nth-child(even){background:#fafafa}"
       "img{max-width:100%;height:auto;border:1px solid #eee}nav a{margin-right:14px}"
       "ol.foot{color:#555;font-size:13px}")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_page(title: str, sections: list[tuple[str, str, str]], intro: str = "") -> str:
    """One self-contained page: sections of (anchor, heading, HTML body), with a table of contents."""
    nav = " ".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<h2 id="{a}">{html.escape(h)}</h2>{b}' for a, h, b in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{intro}<nav>{nav}</nav>{body}"
            "</body></html>\n")


def _figure(png: bytes | None, caption: str) -> str:
    if png is None:
        return f'<p class="note">{html.escape(caption)}</p>'
    return f'<figure><img src="{_data_uri(png)}" alt="{html.escape(caption)}"><figcaption class="note">' \
           f"{html.escape(caption)}</figcaption></figure>"


def html_table(rows: list[dict], detectors: list[dict] = (), figures: dict | None = None,
               sheets: dict | None = None) -> str:
    """results.html: the tables, then the figures (PNG bytes embedded), top-down."""
    figures = figures or {}
    sections = []
    groups = seed_groups(rows)
    if any(g["n"] > 1 for g in groups):
        sections.append(("seeds", "Results over seeds", f'<p class="note">{html.escape(SEED_NOTE)}</p>'
                         + _grid_html(*seed_table(groups))))
    sections.append(("results", "Every run" if sections else "Results",
                     f'<p class="note">{html.escape(UNITS_NOTE)}</p>{_html_table(rows, COLUMNS)}'))
    if detectors:
        sections.append(("detectors", "2D detectors",
                         f'<p class="note">{html.escape(DETECTOR_NOTE)}</p>{_html_table(detectors, DETECTOR_COLUMNS)}'))
    for name, (anchor, heading, caption) in FIGURES.items():
        if name in figures:
            sections.append((anchor, heading, _figure(figures[name], caption)))
    for name, png in (sheets or {}).items():
        sections.append((f"crops-{name}", f"Rendered crops: {name}",
                         _figure(png, f"Rendered person crops of {name} with their 2D skeletons: green bones where "
                                      "both joints are visible, red where one is occluded.")))
    intro = f"{len(rows)} lifting run{'s' if len(rows) != 1 else ''} of {len(groups)} experiment" \
            f"{'s' if len(groups) != 1 else ''}, {len(detectors)} 2D detector{'s' if len(detectors) != 1 else ''}."
    ranked = [g for g in groups if g["mpjpe"][0] is not None]
    if ranked:
        best = min(ranked, key=lambda g: g["mpjpe"][0])
        intro += f" Lowest MPJPE: {best['experiment']}, {format_mean_std(*best['mpjpe'][:2])} mm" + \
                 (f" (mean over {best['n']} runs)." if best["n"] > 1 else ".")
    return html_page("poselift results", sections, f'<p class="note">{html.escape(intro)}</p>')


def dvc_metrics(rows: list[dict], detectors: list[dict] = ()) -> dict:
    """{experiment: {metric: value}} of the numeric columns (what ``dvc metrics show`` prints)."""
    out = {row["experiment"]: {k: row[k] for k, _, d in COLUMNS if d is not None and k != "frames"} for row in rows}
    out.update({row["experiment"]: {k: row[k] for k in DETECTOR_REQUIRED if k != "samples"} for row in detectors})
    return out


# --- figures --------------------------------------------------------------------------------------------------

# file name -> (anchor in results.html, heading, caption)
FIGURES = {
    "training.png": ("training", "Training curves",
                     "Training loss (dashed, right axis, log scale) and validation metric (solid, left axis) per "
                     "epoch of each stage; stage II continues after stage I (dotted line). One line per seeded "
                     "run; the star marks the epoch whose checkpoint was kept."),
    "per_group.png": ("groups", "Error per joint group",
                      "MPJPE and P-MPJPE (mm) per joint group by distance to the pelvis (POT's Fig. 3/4): group 1 "
                      "pelvis, hips, spine ... group 5 wrists; mean over seeded runs, bars: std."),
    "per_action.png": ("actions", "MPJPE per action",
                       "MPJPE (mm) on the test split per action (rows) and experiment (columns; mean over seeded "
                       "runs); the last row is the mean over actions, the table's MPJPE. Blank: no such action."),
    "skeletons.png": ("frames", "Test frames",
                      "A few test frames, root-relative 3D in the camera's coordinates (mm): ground truth (black) "
                      "and each experiment's prediction (left limbs blue, right red, ground truth grey beneath); "
                      "each panel's title gives that frame's MPJPE."),
    "attention.png": ("attention", "Lifting by Image: where the keypoints look",
                      "Each Lifting-by-Image experiment's attention picture (poselift evaluate's attention.png): "
                      "Stage 1's last-layer keypoint-to-image attention over the test crop with the median "
                      "background share, the 30-pixel circles around the ground-truth joints (cyan) and, for "
                      "Stage 2, the centres of the kept image tokens (green); the table's Background attention is "
                      "the mean share outside the circles over every test crop ([L] Tables 1, 5)."),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (and closed)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _message_figure(text: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555", wrap=True)
    return fig


def run_dir(result: Result) -> Path:
    return result.path.parent.parent


def histories(result: Result) -> list[dict]:
    """The run's stage<N>/history.json files, by stage number (unreadable ones left out)."""
    out = []
    for path in sorted(run_dir(result).glob("stage*/history.json"),
                       key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0)):
        try:
            h = read_json(path)
        except InputError:
            continue
        if isinstance(h, dict) and isinstance(h.get("epochs"), list) and h["epochs"]:
            out.append(h)
    return out


def _val_key(epochs: list[dict]) -> str | None:
    keys = [k for k in epochs[0] if k.startswith("val_") and _is_number(epochs[0][k])]
    return keys[0] if keys else None


VAL_LABELS = {"val_mpjpe": "validation MPJPE (mm)", "val_px": "validation error (px)"}


def plot_training(results: list[Result], columns: int = 3):
    """Small multiples, one panel per base experiment: each stage's loss and validation metric per epoch,
    stages one after the other, a line per seeded run."""
    plt = _pyplot()
    import numpy as np

    panels: dict[str, list[tuple[int, list[dict]]]] = {}
    for r in results:
        hs = histories(r)
        if hs:
            base, k = run_base(r.experiment)
            panels.setdefault(base, []).append((k, hs))
    if not panels:
        return _message_figure("No training histories (stage<N>/history.json) found: baselines only.")
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    from matplotlib import ticker

    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows + 0.35), squeeze=False)
    handles = []
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (base, runs) in zip(axes.flat, panels.items()):
        loss_ax = ax.twinx()
        positive = all(e["loss"] > 0 for _, hs in runs for h in hs for e in h["epochs"] if _is_number(e.get("loss")))
        ylabels = set()
        for i, (k, hs) in enumerate(sorted(runs)):
            offset, alpha = 0, 1.0 if len(runs) == 1 else 0.6
            for s, h in enumerate(hs):
                epochs = h["epochs"]
                x = offset + np.array([e["epoch"] for e in epochs], float)
                key = _val_key(epochs)
                if key:
                    ylabels.add(VAL_LABELS.get(key, key.replace("_", " ")))
                    ax.plot(x, [e[key] for e in epochs], "-o", ms=3, lw=1.5, color="C0", alpha=alpha,
                            label="validation" if i == 0 and s == 0 else None)
                loss_ax.plot(x, [e.get("loss", np.nan) for e in epochs], "--", lw=1.2, color="C3", alpha=alpha,
                             label="training loss" if i == 0 and s == 0 else None)
                best = h.get("best") or {}
                if key and s == len(hs) - 1 and _is_number(best.get(key)) and _is_number(best.get("epoch")):
                    ax.plot(offset + best["epoch"], best[key], "*", ms=11, color="C1", zorder=5,
                            label="kept" if i == 0 else None)
                if s > 0 and i == 0:
                    ax.axvline(offset + 0.5, color="#888", ls=":", lw=1)
                    name = (h.get("stage") or {}).get("name", "")
                    ax.text(offset + 0.7, 0.97, f"stage {s + 1}" + (f"\n({name})" if name else ""),
                            transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="#555")
                offset += len(epochs)
        if positive:
            loss_ax.set_yscale("log")
        ax.set_title(base + (f"  ({len(runs)} runs)" if len(runs) > 1 else ""), fontsize=10)
        ax.set_xlabel("epoch (stages in order)")
        ax.set_ylabel(" / ".join(sorted(ylabels)) or "validation", color="C0")
        loss_ax.set_ylabel("training loss", color="C3")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        loss_ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        loss_ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.3g"))
        loss_ax.tick_params(axis="y", which="both", labelsize=7, colors="C3")
        if not handles:
            handles = [h for a in (ax, loss_ax) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], loc="upper center", ncol=len(handles), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def joint_groups(result: Result) -> dict | None:
    """{"mpjpe": {group: mm}, "p_mpjpe": {...}} of a lifting run: its per_group.json, else metrics.json's
    per_joint_group (MPJPE only); None without either."""
    path = run_dir(result) / "evaluation" / "per_group.json"
    if path.is_file():
        try:
            data = read_json(path)
        except InputError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("mpjpe"), dict):
            return {k: data[k] for k in ("mpjpe", "p_mpjpe") if isinstance(data.get(k), dict)}
    if isinstance(result.metrics.get("per_joint_group"), dict):
        return {"mpjpe": result.metrics["per_joint_group"]}
    return None


def plot_per_group(results: list[Result]):
    """POT's Fig. 3/4 view: MPJPE and P-MPJPE per joint group (distance to the pelvis), a line per base
    experiment (mean over its seeded runs, error bars: std)."""
    plt = _pyplot()
    import numpy as np

    data: dict[str, list[dict]] = {}
    for r in results:
        g = joint_groups(r)
        if g:
            data.setdefault(run_base(r.experiment)[0], []).append(g)
    if not data:
        return _message_figure("No per-joint-group errors (evaluation/per_group.json) found.")
    metrics = [m for m in ("mpjpe", "p_mpjpe") if any(m in g for gs in data.values() for g in gs)]
    groups = list(next(iter(data.values()))[0]["mpjpe"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False)
    labels = [g.split(": ", 1)[0] + "\n" + textwrap.fill(g.split(": ", 1)[-1].replace("+", ", "), 13)
              for g in groups]
    x = np.arange(len(groups))
    spread = 0.25 / max(1, len(data))
    for ax, metric in zip(axes[0], metrics):
        for i, (base, gs) in enumerate(data.items()):
            stats = [mean_std([g.get(metric, {}).get(group) for g in gs]) for group in groups]
            if all(m is None for m, _, _ in stats):
                continue
            mean = [np.nan if m is None else m for m, _, _ in stats]
            std = [0.0 if s is None else s for _, s, _ in stats]
            ax.errorbar(x + (i - (len(data) - 1) / 2) * spread, mean, yerr=std, marker="o", ms=4, lw=1.5,
                        capsize=2, label=base, color=f"C{i % 10}", ls="-" if i < 10 else "--")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel("joint group (hops from the pelvis)")
        ax.set_ylabel(f"{'MPJPE' if metric == 'mpjpe' else 'P-MPJPE'} (mm)")
        ax.set_title(f"{'MPJPE' if metric == 'mpjpe' else 'P-MPJPE'} per joint group", fontsize=11)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def per_action_table(results: list[Result]) -> tuple[list[str], dict[str, list[float | None]]]:
    """(actions, {base experiment: MPJPE per action, mean over its seeded runs (None where no run has such
    an action)})."""
    actions = sorted({a for r in results for a in r.metrics["per_action"]})
    runs: dict[str, list[Result]] = {}
    for r in results:
        runs.setdefault(run_base(r.experiment)[0], []).append(r)
    return actions, {base: [mean_std([r.metrics["per_action"].get(a, {}).get("mpjpe") for r in rs])[0]
                            for a in actions] for base, rs in runs.items()}


def plot_per_action(results: list[Result]):
    """A heatmap of MPJPE per action (rows) and experiment (columns), with the values written in the cells;
    its last row is the mean over actions (the table's MPJPE, mean over seeded runs)."""
    plt = _pyplot()
    import numpy as np

    actions, values = per_action_table(results)
    if not values or not actions:
        return _message_figure("No per-action errors.")
    names = list(values)
    grid = np.array([[np.nan if v is None else v for v in values[n]] for n in names], float).T
    means = {}
    for r in results:
        means.setdefault(run_base(r.experiment)[0], []).append(table_rows([r])[0]["mpjpe"])
    mean_row = np.array([[np.nan if mean_std(means[n])[0] is None else mean_std(means[n])[0] for n in names]])
    full = np.vstack([grid, mean_row])
    rows = actions + ["mean over actions"]
    fig, ax = plt.subplots(figsize=(max(5.5, 2.8 + 0.95 * len(names)), 1.4 + 0.33 * len(rows)))
    finite = full[np.isfinite(full)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(full), cmap="viridis_r", aspect="auto", vmin=vmin,
                      vmax=vmax if vmax > vmin else vmin + 1)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.get_yticklabels()[-1].set_fontweight("bold")
    ax.axhline(len(actions) - 0.5, color="white", lw=3)
    for (i, j), v in np.ndenumerate(full):
        if np.isfinite(v):
            dark = (v - vmin) / max(vmax - vmin, 1e-9) > 0.55
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xlabel("experiment")
    ax.set_title("MPJPE (mm) per action on the test split", fontsize=11)
    fig.colorbar(image, ax=ax, label="MPJPE (mm)", fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig


def _frame_poses(result: Result, frames: int):
    """(predictions, targets, frame indices) at ``frames`` test frames spread over a lifting run's evaluation,
    (frames, 17, 3) in mm, and the number of test frames; None if either file is missing or malformed. Only
    the picked frames are kept (a full Human3.6M test split is 100 MB per array)."""
    import numpy as np

    folder = run_dir(result) / "evaluation"
    try:
        with np.load(folder / "predictions.npz") as p, np.load(folder / "targets.npz") as t:
            pred, gt = p["poses_3d"], t["poses_3d"]
            if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (17, 3) or not len(gt):
                return None
            picks = [int(len(gt) * (i + 0.5) / frames) for i in range(frames)]
            return pred[picks].astype(float), gt[picks].astype(float), picks, len(gt)
    except (OSError, KeyError, ValueError, EOFError):
        return None


def _actions(result: Result, frames: int) -> list[str] | None:
    path = run_dir(result) / "evaluation" / "actions.json"
    try:
        actions = read_json(path) if path.is_file() else None
    except InputError:
        return None
    return actions if isinstance(actions, list) and len(actions) == frames else None


def _draw_skeleton(ax, pose, colours, lw=2.0, alpha=1.0):
    from poselift.skeleton import H36M17

    p = pose - pose[:1]
    xs, ys, zs = p[:, 0], p[:, 2], -p[:, 1]  # camera x right, z forward, -y up
    for parent, child in H36M17.bones:
        ax.plot(xs[[parent, child]], ys[[parent, child]], zs[[parent, child]], color=colours(child), lw=lw,
                alpha=alpha, solid_capstyle="round")


def _limb_colour(child: int) -> str:
    from poselift.skeleton import H36M17

    return "#1f5fbf" if child in H36M17.left else "#d62728" if child in H36M17.right else "#333333"


def plot_skeletons(results: list[Result], frames: int = 3, max_experiments: int = 7):
    """Test frames with the ground-truth 3D skeleton and each experiment's predicted one side by side: per
    dataset, ``frames`` frames spread over its test split (the same frames for every experiment evaluated on
    it), each frame a run of panels (ground truth, then one per experiment: run 0 of each; baselines left
    out), several frames to a row where few experiments share a dataset."""
    plt = _pyplot()
    import numpy as np

    datasets: dict[str, list[tuple[Result, object]]] = {}
    for r in results:
        if run_base(r.experiment)[1] or is_detector(r) or (r.metrics.get("inputs") or {}).get("model") == "mean-pose":
            continue
        poses = _frame_poses(r, frames)
        if poses is None:
            continue
        key = str((r.metrics.get("inputs") or {}).get("prepared") or "") + f"#{poses[3]}"
        group = datasets.setdefault(key, [])
        if len(group) < max_experiments:
            group.append((r, poses))
    if not datasets:
        return _message_figure("No test predictions (evaluation/predictions.npz, targets.npz) found.")
    columns = max(1 + max(len(g) for g in datasets.values()), 6)
    layout = []  # per figure row: [(dataset key, frame, panel index 0 = ground truth)]
    for key, group in datasets.items():
        unit = 1 + len(group)
        per_row = max(1, columns // unit)
        for start in range(0, frames, per_row):
            layout.append([(key, i, c) for i in range(start, min(frames, start + per_row)) for c in range(unit)])
    fig = plt.figure(figsize=(2.0 * columns, 2.4 * len(layout)))
    for row, panels in enumerate(layout):
        for col, (key, i, c) in enumerate(panels):
            group = datasets[key]
            gt, f = group[0][1][1], group[0][1][2][i]  # the picked frames; f: the frame's index in the split
            ax = fig.add_subplot(len(layout), columns, row * columns + col + 1, projection="3d")
            target = gt[i] - gt[i][:1]
            radius = max(float(np.abs(target).max()), 1.0) * 1.05
            if c == 0:
                actions = _actions(group[0][0], group[0][1][3])
                _draw_skeleton(ax, gt[i], lambda j: "black", lw=2.2)
                dataset = Path(key.split("#")[0]).stem or "test"
                ax.set_title(f"ground truth\n{dataset} frame {f}" + (f"\n{actions[f]}" if actions else ""),
                             fontsize=8)
            else:
                r, (pred, gts, _, _) = group[c - 1]
                same = np.allclose(gts[i], gt[i], atol=1e-3)
                _draw_skeleton(ax, gts[i], lambda j: "#aaaaaa", lw=1.5, alpha=0.9)
                _draw_skeleton(ax, pred[i], _limb_colour, lw=2.0)
                p = pred[i] - pred[i][:1]
                error = float(np.linalg.norm(p - (gts[i] - gts[i][:1]), axis=-1).mean())
                ax.set_title(f"{r.experiment}\n{error:.0f} mm" + ("" if same else " (other frame!)"), fontsize=8)
            ax.set_xlim(-radius, radius)
            ax.set_ylim(-radius, radius)
            ax.set_zlim(-radius, radius)
            ax.set_box_aspect((1, 1, 1), zoom=1.35)
            ax.view_init(elev=12, azim=-72)
            ax.set_axis_off()
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1 - 0.5 / fig.get_figheight(), wspace=0.0, hspace=0.2)
    return fig


def attention_pictures(results: list[Result]) -> list[tuple[str, Path]]:
    """(experiment, its evaluation's attention.png) of the results that drew one (Lifting by Image)."""
    return [(r.experiment, r.path.parent / "attention.png") for r in results
            if not is_detector(r) and (r.path.parent / "attention.png").is_file()]


def plot_attention(pictures: list[tuple[str, Path]], columns: int = 4):
    """The attention pictures side by side, each titled with its experiment."""
    plt = _pyplot()
    rows = -(-len(pictures) // columns)
    cols = min(columns, len(pictures))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, path) in zip(axes.flat, pictures):
        try:
            ax.imshow(plt.imread(path))
        except (OSError, ValueError, SyntaxError) as e:  # an unreadable picture is named, not fatal
            ax.text(0.5, 0.5, f"unreadable:\n{type(e).__name__}", ha="center", va="center")
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    return fig


def report_figures(results: list[Result]) -> dict[str, bytes]:
    """Every figure of results.html as PNG bytes, by file name (FIGURES); attention.png only where a Lifting-by-
    Image evaluation drew one."""
    lifting = [r for r in results if not is_detector(r)]
    figures = {"training.png": figure_png(plot_training(results)),
               "per_group.png": figure_png(plot_per_group(lifting)),
               "per_action.png": figure_png(plot_per_action(lifting), dpi=110),
               "skeletons.png": figure_png(plot_skeletons(lifting), dpi=90)}
    pictures = attention_pictures(lifting)
    if pictures:
        figures["attention.png"] = figure_png(plot_attention(pictures), dpi=110)
    return figures


def write_report(results: list[Result], out: str | os.PathLike, sheets: dict[str, bytes] | None = None) \
        -> dict[str, Path]:
    """Write results.md, results.csv, results.html (the tables and every figure, embedded), metrics.json and
    the figures (FIGURES: per_action.png, training.png, per_group.png, skeletons.png) into ``out``.
    ``sheets``: {name: PNG} contact sheets shown at the end of results.html."""
    out = Path(out)
    rows, detectors = table_rows(results), detector_rows(results)
    figures = report_figures(results)  # all computed before anything is written
    files = {"results.md": markdown(rows, detectors, figures=figures).encode(), "results.csv": csv_text(rows).encode(),
             "results.html": html_table(rows, detectors, figures, sheets).encode(),
             "metrics.json": (json.dumps(dvc_metrics(rows, detectors), indent=2) + "\n").encode(), **figures}
    return _write_files(out, files)


def _write_files(out: Path, files: dict[str, bytes]) -> dict[str, Path]:
    written = {}
    for name, data in files.items():
        with atomic_output(out / name) as tmp:
            tmp.write_bytes(data)
        written[name] = out / name
    return written


# --- the bench target: ablations and the detector table over seeds --------------------------------------------

@dataclass
class BenchConfig:
    seeds: int
    ablations: list[dict]
    detector_models: dict[str, dict[str, str]]  # model -> {2D source: experiment}
    detector_ap: dict[str, str]  # 2D source -> detector experiment
    path: Path
    once: tuple = ()  # bench.once: experiments run a single time (seed offset 0), e.g. the 2D detectors


def read_bench(path: str | os.PathLike) -> BenchConfig:
    """params.yaml's ``bench`` section, checked for what the report needs (``seeds``, ``ablations``,
    ``detector_table``); other keys are the workflow's."""
    from poselift.experiments import read_params

    path = Path(path)
    params = read_params(path)
    bench = params.get("bench")
    if not isinstance(bench, dict):
        raise InputError(path, "bench: missing, or not a mapping")
    seeds = bench.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise InputError(path, f"bench.seeds: expected an integer >= 1, got {seeds!r}")
    ablations = bench.get("ablations") or []
    if not isinstance(ablations, list):
        raise InputError(path, "bench.ablations: expected a list")
    for i, a in enumerate(ablations):
        where = f"bench.ablations[{i}]"
        if not isinstance(a, dict):
            raise InputError(path, f"{where}: expected a mapping")
        for key in ("effect", "baseline", "variant"):
            if not isinstance(a.get(key), str) or not a[key]:
                raise InputError(path, f"{where}.{key}: missing, or not a string")
        if a.get("paper") is not None and not _is_number(a["paper"]):
            raise InputError(path, f"{where}.paper: expected a number (mm) or null, got {a['paper']!r}")
        unknown = sorted(set(a) - {"effect", "baseline", "variant", "paper", "source"})
        if unknown:
            raise InputError(path, f"{where}.{unknown[0]}: unknown key (known: effect, baseline, variant, paper, "
                                   "source)")
    table = bench.get("detector_table") or {}
    if not isinstance(table, dict):
        raise InputError(path, "bench.detector_table: expected a mapping")
    models, ap = table.get("models") or {}, table.get("ap") or {}
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise InputError(path, "bench.detector_table.models: expected {model: {2D source: experiment}}")
    if not isinstance(ap, dict):
        raise InputError(path, "bench.detector_table.ap: expected {2D source: detector experiment}")
    for where, mapping in [("ap", ap)] + [(f"models.{m}", v) for m, v in models.items()]:
        for source, exp in mapping.items():
            if not isinstance(exp, str) or not exp:
                raise InputError(path, f"bench.detector_table.{where}.{source}: expected an experiment name")
    known = params.get("experiments")
    if isinstance(known, dict):  # a misspelt name would otherwise read as runs not evaluated yet
        named = [(f"bench.ablations[{i}].{key}", a[key]) for i, a in enumerate(ablations) for key in ("baseline",
                                                                                                      "variant")]
        named += [(f"bench.detector_table.models.{m}.{s}", e) for m, v in models.items() for s, e in v.items()]
        named += [(f"bench.detector_table.ap.{s}", e) for s, e in ap.items()]
        for where, name in named:
            if name not in known:
                raise InputError(path, f"{where}: no experiment '{name}' in the experiments section")
    once = bench.get("once") or []
    if not isinstance(once, list) or not all(isinstance(n, str) for n in once):
        raise InputError(path, "bench.once: expected a list of experiment names")
    return BenchConfig(seeds, ablations, {str(m): {str(s): e for s, e in v.items()} for m, v in models.items()},
                       {str(s): e for s, e in ap.items()}, path, tuple(once))


class RunValues:
    """One metric of every run of base experiments over seeds 0..seeds-1, from ``<results>/<run>/evaluation/
    metrics.json``; a run without its metrics.json is missing (never a number)."""

    def __init__(self, results: str | os.PathLike, seeds: int, once=()):
        self.results, self.seeds, self.once = Path(results), seeds, set(once)
        self._cache: dict[str, Result | None] = {}

    def result(self, run: str) -> Result | None:
        if run not in self._cache:
            path = metrics_path(self.results, run)
            self._cache[run] = collect(self.results, [run])[0] if path.is_file() else None
        return self._cache[run]

    def values(self, base: str, metric: str) -> dict[int, float | None]:
        """{k: value of run k} for k < seeds (k = 0 alone for bench.once); None where run k is not evaluated."""
        out = {}
        for k in range(1 if base in self.once else self.seeds):
            r = self.result(run_name(base, k))
            if r is None:
                out[k] = None
            elif metric == "ap":
                if not is_detector(r):
                    raise InputError(r.path, "not a 2D detector's evaluation (task heatmaps): no AP")
                out[k] = 100.0 * r.metrics["AP"]
            else:
                if is_detector(r):
                    raise InputError(r.path, "a 2D detector's evaluation, expected a lifting experiment's")
                out[k] = table_rows([r])[0][metric]
        return out


class Footnotes:
    def __init__(self):
        self.notes: list[str] = []

    def add(self, text: str) -> str:
        if text not in self.notes:
            self.notes.append(text)
        return f"[{self.notes.index(text) + 1}]"


def _missing_note(base: str, values: dict[int, float | None], seeds: int) -> str | None:
    missing = [run_name(base, k) for k, v in values.items() if v is None]
    if not missing:
        return None
    return (f"{', '.join(missing)}: not evaluated yet (no evaluation/metrics.json); "
            f"{seeds - len(missing)} of {seeds} runs of {base} counted.")


def ablation_rows(config: BenchConfig, runs: RunValues, notes: Footnotes) -> list[dict]:
    """Per ablation: baseline's and variant's MPJPE over seeds, the effect (variant - baseline, paired by
    seed k) as mean ± std, the paper's effect, whether the sign reproduced and whether |effect| exceeds the
    spread (the std of the paired differences)."""
    out = []
    for a in config.ablations:
        base, var = runs.values(a["baseline"], "mpjpe"), runs.values(a["variant"], "mpjpe")
        diffs = {k: var[k] - base[k] for k in base if base[k] is not None and var[k] is not None}
        mean, std, n = mean_std(diffs.values())
        paper = a.get("paper")
        marks = [notes.add(t) for t in (_missing_note(a["baseline"], base, config.seeds),
                                        _missing_note(a["variant"], var, config.seeds)) if t]
        if mean is None:
            sign = exceeds = DASH
        else:
            sign = DASH if paper is None or paper == 0 or mean == 0 else ("yes" if (mean > 0) == (paper > 0) else "no")
            exceeds = DASH if std is None else ("yes" if abs(mean) > std else "no")
        out.append({"effect": a["effect"], "baseline": a["baseline"], "variant": a["variant"],
                    "baseline_mpjpe": mean_std(base.values()), "variant_mpjpe": mean_std(var.values()),
                    "diffs": diffs, "delta": (mean, std, n), "paper": paper, "source": a.get("source") or "",
                    "sign": sign, "exceeds": exceeds, "marks": "".join(marks)})
    return out


ABLATION_HEADER = ["Effect", "Baseline", "Variant", "Baseline MPJPE", "Variant MPJPE", "Δ MPJPE (variant − baseline)",
                   "pairs", "Paper Δ", "Source", "Sign reproduced", "Δ beyond spread"]
ABLATION_ALIGN = [False, False, False, True, True, True, True, True, False, False, False]
ABLATION_NOTE = ("Δ: MPJPE (mm, averaged over actions) of the variant minus its baseline, paired by seed (run k of "
                 "each), mean ± sample std over the pairs; positive = the variant is worse. Paper Δ: the change its "
                 "paper reports, same sign convention. Sign reproduced: the signs of Δ and Paper Δ agree. "
                 "Δ beyond spread: the mean effect is larger than the std of the paired differences, |mean| > std "
                 "(— with fewer than two pairs). [n]: see the notes; —: no evaluated run, never a number.")


def ablation_cells(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        mean, std, n = r["delta"]
        delta = DASH if mean is None else f"{mean:+.1f}" if std is None else f"{mean:+.1f} ± {std:.1f}"
        out.append([r["effect"], r["baseline"], r["variant"], format_mean_std(*r["baseline_mpjpe"][:2]),
                    format_mean_std(*r["variant_mpjpe"][:2]), delta + r["marks"], str(n),
                    DASH if r["paper"] is None else f"{r['paper']:+.1f}", r["source"], r["sign"], r["exceeds"]])
    return out


def detector_table(config: BenchConfig, runs: RunValues, notes: Footnotes) -> tuple[list[str], list[list[str]]]:
    """The attention paper's Table V: MPJPE mean ± std over seeds per model (rows) and 2D source (columns),
    and a row of the 2D detectors' COCO AP (%)."""
    sources = []
    for mapping in list(config.detector_models.values()) + [config.detector_ap]:
        sources += [s for s in mapping if s not in sources]
    header = ["Model"] + sources
    rows = []
    for model, mapping in config.detector_models.items():
        cells = [model]
        for source in sources:
            if source not in mapping:
                cells.append("")
                continue
            values = runs.values(mapping[source], "mpjpe")
            mean, std, n = mean_std(values.values())
            note = _missing_note(mapping[source], values, config.seeds)
            cells.append(format_mean_std(mean, std) + (notes.add(note) if note else ""))
        rows.append(cells)
    if config.detector_ap:
        cells = ["2D AP (%)"]
        for source in sources:
            if source not in config.detector_ap:
                cells.append("n/a")
                continue
            values = runs.values(config.detector_ap[source], "ap")
            mean, std, n = mean_std(values.values())
            note = _missing_note(config.detector_ap[source], values, len(values))
            cells.append(format_mean_std(mean, std) + (notes.add(note) if note else ""))
        rows.append(cells)
    return header, rows


DETECTOR_TABLE_NOTE = ("MPJPE (mm, averaged over actions) of each lifting model trained and tested on each source "
                       "of 2D keypoints (the attention paper's Table V), mean ± sample std over seeds; the last row: "
                       "COCO OKS AP (%) of each 2D detector on the rendered test crops (n/a: no network detector). Blank: not in "
                       "bench.detector_table; —: no evaluated run, never a number; [n]: see the notes.")


def plot_ablations(rows: list[dict]):
    """Each ablation's effect: the paired differences per seed (dots), their mean ± std (bar), the paper's
    reported effect (diamond)."""
    plt = _pyplot()

    if not rows:
        return _message_figure("No ablations in bench.ablations.")
    fig, ax = plt.subplots(figsize=(9.0, 1.8 + 0.55 * len(rows)))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        mean, std, _ = r["delta"]
        if r["diffs"]:
            ax.plot(list(r["diffs"].values()), [y + 0.18] * len(r["diffs"]), "o", ms=4, color="#777",
                    label="one seed pair" if not any(x == "one seed pair" for x in ax.get_legend_handles_labels()[1])
                    else None)
        else:
            ax.text(0.99, y, "no evaluated pair  ", transform=ax.get_yaxis_transform(), ha="right", va="center",
                    fontsize=8, color="#777")
        labels = ax.get_legend_handles_labels()[1]
        if mean is not None:
            ax.errorbar(mean, y, xerr=std or 0, fmt="s", ms=7, color="C0", capsize=4,
                        label=None if "mean ± std over seeds" in labels else "mean ± std over seeds")
        if r["paper"] is not None:
            ax.plot(r["paper"], y, "D", ms=7, color="C3", mfc="none", mew=2,
                    label=None if "paper" in labels else "paper")
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(rows)), [r["effect"] for r in reversed(rows)], fontsize=9)
    ax.set_xlabel("Δ MPJPE (mm), variant − baseline  (> 0: the variant is worse)")
    ax.set_title("Ablations: effect on MPJPE", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.9 / fig.get_figheight() - 0.12),
                  ncol=3, frameon=False)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    fig.tight_layout()
    return fig


def write_bench(results: str | os.PathLike, params: str | os.PathLike, out: str | os.PathLike) -> dict[str, Path]:
    """bench.md, bench.html and bench_ablations.png into ``out`` from params.yaml's ``bench`` section and the
    runs' evaluations under ``results``."""
    config = read_bench(params)
    runs = RunValues(results, config.seeds, config.once)
    notes = Footnotes()
    ablations = ablation_rows(config, runs, notes)
    det_header, det_rows = detector_table(config, runs, notes) if config.detector_models or config.detector_ap \
        else ([], [])
    png = figure_png(plot_ablations(ablations))
    abl_cells = ablation_cells(ablations)
    intro = (f"{config.seeds} run(s) per experiment (seed offsets 0..{config.seeds - 1}); from "
             f"{config.path} and the evaluations under {Path(results)}.")
    md = f"# Bench\n\n{intro}\n\n## Ablations\n\n{ABLATION_NOTE}\n\n"
    md += _grid_markdown(ABLATION_HEADER, abl_cells, ABLATION_ALIGN) if ablations else "No ablations listed.\n"
    md += "\n![Ablations](bench_ablations.png)\n"
    sections = [("ablations", "Ablations", f'<p class="note">{html.escape(ABLATION_NOTE)}</p>'
                 + (_grid_html(ABLATION_HEADER, abl_cells, ABLATION_ALIGN) if ablations else "<p>No ablations.</p>")
                 + _figure(png, "Each ablation's effect per seed pair (grey), mean ± std (blue) and the paper's "
                                "(red diamond)."))]
    if det_header:
        align = [False] + [True] * (len(det_header) - 1)
        md += f"\n## 2D detectors (attention paper, Table V)\n\n{DETECTOR_TABLE_NOTE}\n\n" + \
              _grid_markdown(det_header, det_rows, align)
        sections.append(("detectors", "2D detectors (attention paper, Table V)",
                         f'<p class="note">{html.escape(DETECTOR_TABLE_NOTE)}</p>' + _grid_html(det_header, det_rows,
                                                                                               align)))
    if notes.notes:
        md += "\n## Notes\n\n" + "".join(f"{i}. {n}\n" for i, n in enumerate(notes.notes, 1))
        sections.append(("notes", "Notes", '<ol class="foot">' + "".join(f"<li>{html.escape(n)}</li>"
                                                                          for n in notes.notes) + "</ol>"))
    page = html_page("poselift bench", sections, f'<p class="note">{html.escape(intro)}</p>')
    return _write_files(Path(out), {"bench.md": md.encode(), "bench.html": page.encode(),
                                    "bench_ablations.png": png})


# --- the contact sheet of labelled crops ---------------------------------------------------------------------

def contact_sheet(crops_path: str | os.PathLike, count: int = 24, columns: int = 8, seed: int = 0):
    """An RGB uint8 image: ``count`` crops of a labelled-crops file (:mod:`poselift.data.crop_file`), spread
    over its views, each with its H36M-17 skeleton drawn on it (bones green where both joints are visible,
    red where one is occluded) and its view's name. What a person checks: a person should look like a person,
    and the skeleton should sit on the body."""
    import cv2
    import numpy as np

    from poselift.data.crop_file import CropFile
    from poselift.skeleton import H36M17

    f = CropFile(crops_path)
    rng = np.random.default_rng(seed)
    every = [(v, i) for v in f.views for i in range(f.counts[v])]
    picks = [every[k] for k in sorted(rng.choice(len(every), min(count, len(every)), replace=False))]
    tiles = []
    for key, i in picks:
        s = f.sample(key, i)
        tile = s["image"].copy()
        for j, parent in enumerate(H36M17.parents):
            if parent < 0 or not np.isfinite(s["keypoints"][[j, parent]]).all():
                continue
            seen = s["visibility"][j] > 0 and s["visibility"][parent] > 0
            a, b = (tuple(int(round(v)) for v in s["keypoints"][k]) for k in (j, parent))
            cv2.line(tile, a, b, (40, 220, 40) if seen else (230, 40, 40), 2, cv2.LINE_AA)
        for j, (x, y) in enumerate(s["keypoints"]):
            if not np.isfinite([x, y]).all():
                continue
            cv2.circle(tile, (int(round(x)), int(round(y))), 3, (255, 255, 255) if s["visibility"][j] else (230, 40, 40), -1)
        cv2.putText(tile, f"{key.split('/', 1)[-1][-24:]} #{int(s['frame'])}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    f.close()
    if not tiles:
        raise InputError(crops_path, "holds no crops")
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * h, min(columns, len(tiles)) * w, 3), np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet


def write_contact_sheet(crops_path: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """:func:`contact_sheet` saved as a PNG, atomically."""
    import cv2

    sheet = contact_sheet(crops_path, **kwargs)
    out = Path(out)
    with atomic_output(out) as tmp:
        ok, data = cv2.imencode(".png", sheet[..., ::-1])
        tmp.write_bytes(data.tobytes())
    return out
