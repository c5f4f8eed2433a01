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


def write_detector_evaluation(results, name="det", samples=8):
    """results/<name>/evaluation/metrics.json of a 2D detector (task heatmaps) whose keypoints are the labels
    moved 2 px right: every OKS is above 0.95 on these 200 px boxes, so AP = AR = 1, PCK@0.05 (10 px) = 1,
    and the mean error is 2 px."""
    from poselift.detection.evaluation import keypoint_metrics

    rng = np.random.default_rng(1)
    origin = rng.uniform(0, 500, (samples, 1, 2))
    gt = origin + rng.uniform(0, 200, (samples, 17, 2))
    boxes = np.concatenate([origin[:, 0], origin[:, 0] + 200], axis=1)
    metrics = keypoint_metrics(gt + [2.0, 0.0], np.ones((samples, 17)), gt, np.ones((samples, 17)), boxes)
    assert (metrics["AP"], metrics["AR"], metrics["pck@0.05"]) == (1.0, 1.0, 1.0)
    assert metrics["mean_px"] == pytest.approx(2.0)
    metrics["task"] = "heatmaps"
    metrics["inputs"] = {"checkpoint": f"results/{name}/stage1/checkpoint.pt", "model": "hrnet",
                         "crops": "data/renders/tiny.h5", "prepared": "data/prepared/tiny.h5", "split": "test"}
    write_json(results / name / "evaluation" / "metrics.json", metrics)
    return metrics


def test_a_2d_detector_gets_its_own_table_and_stays_out_of_the_lifting_ones(results, tmp_path, run_cli,
                                                                             monkeypatch):
    import poselift.report

    write_detector_evaluation(results)
    plotted = []
    plot = poselift.report.plot_per_action
    monkeypatch.setattr(poselift.report, "plot_per_action",
                        lambda rs: plotted.append([r.experiment for r in rs]) or plot(rs))
    code, _, err = run_cli("report", "--results", results, "--experiment", "a", "--experiment", "det",
                           "--experiment", "b", "--out", tmp_path / "reports")
    assert code == 0, err
    md = (tmp_path / "reports" / "results.md").read_text()
    lifting, _, detectors = md.partition("\n## 2D detectors\n")
    assert "| det |" not in lifting and "| a | tiny | synthetic | martinez |" in lifting
    assert "| Experiment | Dataset | Model | Crops | AP | AP50 | AP75 | AR | PCK@0.05 | Error (px) |" in detectors
    assert "| det | tiny | hrnet | 8 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 2.00 |" in detectors
    assert "| a |" not in detectors
    rows = list(csv.DictReader(open(tmp_path / "reports" / "results.csv")))
    assert [r["experiment"] for r in rows] == ["a", "b"]
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"a", "b", "det"} and "mpjpe" in metrics["a"]
    assert metrics["det"]["AP"] == 1.0 and metrics["det"]["mean_px"] == pytest.approx(2.0)
    assert "mpjpe" not in metrics["det"]
    html = (tmp_path / "reports" / "results.html").read_text()
    assert "<h2>2D detectors</h2>" in html and "<td>det</td>" in html
    assert plotted == [["a", "b"]]  # the per-action plot: lifting experiments only

    # without a detector, no second table
    code, _, err = run_cli("report", "--results", results, "--experiment", "a", "--out", tmp_path / "plain")
    assert code == 0, err
    assert "2D detectors" not in (tmp_path / "plain" / "results.md").read_text()


@pytest.mark.parametrize("defect", ["missing", "null"])
def test_a_detector_evaluation_without_its_ap_is_a_one_line_error(results, tmp_path, run_cli, defect):
    metrics = write_detector_evaluation(results)
    if defect == "missing":
        del metrics["AP"]
    else:
        metrics["AP"] = None  # pycocotools' -1: no ground truth to score
    path = results / "det" / "evaluation" / "metrics.json"
    write_json(path, metrics)
    code, _, err = run_cli("report", "--results", results, "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"poselift: error: {path}: ") and "'AP' is missing or not a finite number" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
