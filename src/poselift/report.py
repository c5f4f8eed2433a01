"""Every experiment's results in one place, from each ``results/<experiment>/evaluation/metrics.json``
(written by ``poselift evaluate``): a table (Markdown, CSV, HTML), a per-action MPJPE plot, and one JSON
file of the headline numbers for ``dvc metrics show/diff``. Experiments that train a 2D detector (task
``heatmaps``) get their own table in the Markdown and HTML: COCO OKS AP/AR, PCK@0.05 and pixel error.

The errors of the table are averaged over actions (each action's frames pooled first), the way the papers
report Human3.6M; "MPJPE (frames)" is the mean over all frames. Lengths in mm, MPJVE in mm/frame, PCK and
AUC in %.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
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
    ("mpjpe", "MPJPE", 1),
    ("p_mpjpe", "P-MPJPE", 1),
    ("n_mpjpe", "N-MPJPE", 1),
    ("mpjve", "MPJVE", 2),
    ("pck150", "PCK@150", 1),
    ("auc", "AUC", 1),
    ("mpjpe_frames", "MPJPE (frames)", 1),
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
        }
        for key in ACTION_MEAN:
            value = m["action_mean"].get(key) if use_actions else m[key]
            row[key] = float(value) if _is_number(value) else None
        for key in OVERALL:
            row[key] = float(m[key])
        rows.append(row)
    return rows


def per_action_table(results: list[Result]) -> tuple[list[str], dict[str, list[float | None]]]:
    """(actions, {experiment: MPJPE per action (None where the experiment has no such action)})."""
    actions = sorted({a for r in results for a in r.metrics["per_action"]})
    return actions, {r.experiment: [r.metrics["per_action"][a]["mpjpe"] if a in r.metrics["per_action"] else None
                                    for a in actions] for r in results}


# --- writers ----------------------------------------------------------------------------------------------

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


DETECTOR_NOTE = ("2D detectors on the test split's crops: COCO OKS AP/AR (pycocotools), PCK@0.05 of the box, "
                 "mean error in frame pixels, over labelled joints.")


def markdown(rows: list[dict], detectors: list[dict] = ()) -> str:
    text = ("# Results\n\nErrors in mm (MPJVE in mm/frame), averaged over actions; MPJPE (frames): over all "
            "frames. PCK@150 and AUC in %, over all frames.\n\n" + _markdown_table(rows, COLUMNS))
    if detectors:
        text += f"\n## 2D detectors\n\n{DETECTOR_NOTE}\n\n" + _markdown_table(detectors, DETECTOR_COLUMNS)
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
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row[k], d))}</td>" for k, _, d in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_table(rows: list[dict], detectors: list[dict] = ()) -> str:
    second = (f"<h2>2D detectors</h2><p>{html.escape(DETECTOR_NOTE)}</p>{_html_table(detectors, DETECTOR_COLUMNS)}"
              if detectors else "")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>poselift results</title><style>"
            "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #999;padding:4px 8px}"
            "td{text-align:right}td:first-child{text-align:left}</style></head><body>"
            "<p>Errors in mm (MPJVE in mm/frame), averaged over actions; MPJPE (frames): over all frames. "
            f"PCK@150 and AUC in %.</p>{_html_table(rows, COLUMNS)}{second}</body></html>\n")


def dvc_metrics(rows: list[dict], detectors: list[dict] = ()) -> dict:
    """{experiment: {metric: value}} of the numeric columns (what ``dvc metrics show`` prints)."""
    out = {row["experiment"]: {k: row[k] for k, _, d in COLUMNS if d is not None and k != "frames"} for row in rows}
    out.update({row["experiment"]: {k: row[k] for k in DETECTOR_REQUIRED if k != "samples"} for row in detectors})
    return out


def plot_per_action(results: list[Result]):
    """A matplotlib figure: MPJPE per action, one bar per experiment in each action's group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    actions, values = per_action_table(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(actions) * max(1, len(values)) ** 0.5 + 2), 4.0))
    width = 0.8 / max(1, len(values))
    x = np.arange(len(actions))
    for i, (name, mpjpe) in enumerate(values.items()):
        heights = [np.nan if v is None else v for v in mpjpe]
        ax.bar(x + (i - (len(values) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, actions, rotation=45, ha="right")
    ax.set_ylabel("MPJPE (mm)")
    ax.set_title("MPJPE per action")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_report(results: list[Result], out: str | os.PathLike) -> dict[str, Path]:
    """Write results.md, results.csv, results.html, metrics.json and per_action.png into ``out``."""
    out = Path(out)
    rows, detectors = table_rows(results), detector_rows(results)
    texts = {"results.md": markdown(rows, detectors), "results.csv": csv_text(rows),
             "results.html": html_table(rows, detectors),
             "metrics.json": json.dumps(dvc_metrics(rows, detectors), indent=2) + "\n"}
    fig = plot_per_action([r for r in results if not is_detector(r)])  # all computed before anything is written
    written = {}
    for name, text in texts.items():
        with atomic_output(out / name) as tmp:
            tmp.write_text(text)
        written[name] = out / name
    import matplotlib.pyplot as plt

    with atomic_output(out / "per_action.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    written["per_action.png"] = out / "per_action.png"
    return written


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
