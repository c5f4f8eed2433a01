"""``poselift report``: every experiment's metrics.json (as ``poselift evaluate`` writes it) into one table,
one DVC metrics file and one per-action plot, with values known by construction."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from poselift.io import write_json
from poselift.metrics import evaluate
from poselift.report import collect, plot_per_action


def write_evaluation(results, name, offsets, model="martinez", detector="synthetic"):
    """results/<name>/evaluation/metrics.json of predictions that miss every joint but the pelvis by
    `offsets[action]` mm along x: MPJPE is root-relative, so each action's MPJPE is 16/17 of its offset."""
    rng = np.random.default_rng(len(name))
    gts, preds, actions = [], [], []
    for action, (offset, frames) in offsets.items():
        gt = rng.normal(0, 300, (frames, 17, 3))
        gts.append(gt)
        pred = gt.copy()
        pred[:, 1:, 0] += offset
        preds.append(pred)
        actions += [action] * frames
    result = evaluate(np.concatenate(preds), np.concatenate(gts), actions=actions)
    result["inputs"] = {"model": model, "prepared": "data/prepared/tiny.h5",
                        "detections": f"data/detections/tiny/{detector}.h5" if detector else None}
    write_json(results / name / "evaluation" / "metrics.json", result)


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "results"
    write_evaluation(results, "a", {"Walking": (17.0, 10), "Eating": (51.0, 30)})  # MPJPE 16 and 48 mm
    write_evaluation(results, "b", {"Walking": (8.5, 20)}, model="videopose3d", detector=None)  # 8 mm
    return results


def test_table_averages_over_actions_and_keeps_the_frame_mean(results, tmp_path, run_cli):
    code, out, err = run_cli("report", "--results", results, "--out", tmp_path / "reports")
    assert code == 0, err
    rows = {r["experiment"]: r for r in csv.DictReader(open(tmp_path / "reports" / "results.csv"))}
    assert list(rows) == ["a", "b"]
    a, b = rows["a"], rows["b"]
    # a: Walking 16 mm over 10 frames, Eating 48 mm over 30 frames: action mean 32, frame mean 40
    assert float(a["mpjpe"]) == pytest.approx(32.0, abs=1e-3)
    assert float(a["mpjpe_frames"]) == pytest.approx(40.0, abs=1e-3)
    assert float(a["pck150"]) == 100.0 and int(a["frames"]) == 40
    assert (a["dataset"], a["detector"], a["model"]) == ("tiny", "synthetic", "martinez")
    assert float(b["mpjpe"]) == pytest.approx(8.0, abs=1e-3) and b["detector"] == "prepared"

    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["a"]["mpjpe"] == pytest.approx(32.0, abs=1e-3)
    assert metrics["b"]["mpjpe_frames"] == pytest.approx(8.0, abs=1e-3)
    md = (tmp_path / "reports" / "results.md").read_text()
    assert "| a | tiny | synthetic | martinez | 40 | 32.0 |" in md
    html = (tmp_path / "reports" / "results.html").read_text()
    assert "<td>videopose3d</td>" in html and html.count("<tr>") == 3
    png = (tmp_path / "reports" / "per_action.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_plot_has_one_bar_per_experiment_and_action_at_its_mpjpe(results):
    fig = plot_per_action(collect(results))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Eating", "Walking"]
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert bars["a"] == pytest.approx([48.0, 16.0], abs=1e-3)
    assert np.isnan(bars["b"][0]) and bars["b"][1] == pytest.approx(8.0, abs=1e-3)  # b has no Eating


def test_named_experiments_in_their_order(results, tmp_path, run_cli):
    code, _, err = run_cli("report", "--results", results, "--experiment", "b", "--experiment", "a",
                           "--out", tmp_path / "r")
    assert code == 0, err
    assert [r["experiment"] for r in csv.DictReader(open(tmp_path / "r" / "results.csv"))] == ["b", "a"]


@pytest.mark.parametrize("defect, problem", [
    ("missing", "file not found"),
    ("no-key", "missing key 'p_mpjpe'"),
    ("nan", "'mpjpe' is None, expected a finite number"),
    ("not-json", "not valid JSON"),
])
def test_bad_evaluation_is_one_line_error_and_writes_nothing(results, tmp_path, run_cli, defect, problem):
    path = results / "a" / "evaluation" / "metrics.json"
    if defect == "missing":
        path.unlink()
    elif defect == "not-json":
        path.write_text("{truncated")
    else:
        m = json.loads(path.read_text())
        if defect == "no-key":
            del m["p_mpjpe"]
        else:
            m["mpjpe"] = None
        path.write_text(json.dumps(m))
    code, _, err = run_cli("report", "--results", results, "--experiment", "a", "--experiment", "b",
                           "--out", tmp_path / "r")
    assert code == 2
    assert err.startswith(f"poselift: error: {path}: ") and problem in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_no_evaluations_is_an_error(tmp_path, run_cli):
    (tmp_path / "results" / "x" / "stage1").mkdir(parents=True)
    code, _, err = run_cli("report", "--results", tmp_path / "results", "--out", tmp_path / "r")
    assert code == 2 and "no evaluations found" in err
