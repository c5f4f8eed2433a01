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


def test_per_action_heatmap_holds_each_experiments_mpjpe_and_the_action_mean(results):
    fig = plot_per_action(collect(results))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Eating", "Walking", "mean over actions"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    grid = ax.images[0].get_array()
    assert grid[0, 0] == pytest.approx(48.0, abs=1e-3) and grid[1, 0] == pytest.approx(16.0, abs=1e-3)
    assert grid.mask[0, 1] and grid[1, 1] == pytest.approx(8.0, abs=1e-3)  # b has no Eating: blank
    assert grid[2, 0] == pytest.approx(32.0, abs=1e-3) and grid[2, 1] == pytest.approx(8.0, abs=1e-3)
    assert "48" in [t.get_text() for t in ax.texts]


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
    assert ">2D detectors</h2>" in html and "<td>det</td>" in html
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


# --- seeds, figures from the run folders, and the bench tables -------------------------------------------------

from poselift.report import mean_std, plot_skeletons, plot_training, run_base  # noqa: E402


def mm(value):
    """The offset of write_evaluation that gives an MPJPE of `value` mm (16 of 17 joints move)."""
    return value * 17 / 16


def test_run_base_splits_the_seed_suffix():
    assert run_base("pot-b-seed2") == ("pot-b", 2)
    assert run_base("pot-b-seed10") == ("pot-b", 10)
    assert run_base("pot-b") == ("pot-b", 0)
    assert run_base("pot-b-seed0") == ("pot-b-seed0", 0)  # k >= 1: seed0 is no seed suffix
    assert run_base("pot-b-seed01") == ("pot-b-seed01", 0)
    assert run_base("-seed1") == ("-seed1", 0)
    assert mean_std([40.0, 42.0, 44.0, None]) == (42.0, 2.0, 3)
    assert mean_std([5.0]) == (5.0, None, 1) and mean_std([None]) == (None, None, 0)


def test_seeded_runs_are_grouped_as_mean_and_std(tmp_path, run_cli):
    results = tmp_path / "results"
    for name, value in [("pot", 40.0), ("pot-seed1", 42.0), ("pot-seed2", 44.0), ("mlp", 30.0)]:
        write_evaluation(results, name, {"Walking": (mm(value), 10)})
    code, _, err = run_cli("report", "--results", results, "--out", tmp_path / "r")
    assert code == 0, err
    md = (tmp_path / "r" / "results.md").read_text()
    over, _, every = md.partition("## Every run")
    assert "| pot | 3 | tiny | synthetic | martinez | 42.0 ± 2.0 |" in over
    assert "| mlp | 1 | tiny | synthetic | martinez | 30.0 |" in over  # one run: no spread
    assert "| pot-seed2 | tiny | synthetic | martinez | 10 | 44.0 |" in every
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert [r["experiment"] for r in rows] == ["mlp", "pot", "pot-seed1", "pot-seed2"]  # csv: every run
    html = (tmp_path / "r" / "results.html").read_text()
    assert "Results over seeds" in html and "42.0 ± 2.0" in html


def write_history(run_dir, stage, vals, losses, best):
    write_json(run_dir / f"stage{stage}" / "history.json",
               {"stage": {"number": stage, "name": f"s{stage}"}, "best": {"epoch": best, "val_mpjpe": vals[best - 1]},
                "epochs": [{"epoch": e + 1, "loss": loss, "val_mpjpe": v} for e, (v, loss) in enumerate(zip(vals, losses))]})


def test_training_curves_put_stage_two_after_stage_one(results):
    write_history(results / "a", 1, [100.0, 80.0, 90.0], [0.5, 0.3, 0.2], best=2)
    write_history(results / "a", 2, [70.0, 60.0], [0.4, 0.1], best=2)
    fig = plot_training(collect(results))
    ax = next(a for a in fig.axes if a.get_title() == "a")
    val = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 1]
    assert [list(line.get_xdata()) for line in val] == [[1, 2, 3], [4, 5]]
    assert [list(line.get_ydata()) for line in val] == [[100.0, 80.0, 90.0], [70.0, 60.0]]
    star = [line for line in ax.lines if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [5] and list(star[0].get_ydata()) == [60.0]
    assert all(a.get_title() != "b" for a in fig.axes)  # b has no history: no panel


def test_test_frames_show_ground_truth_and_prediction_with_the_frames_error(results):
    from poselift.io import write_npz

    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, (9, 17, 3))
    gt -= gt[:, :1]
    pred = gt.copy()
    pred[:, 1:, 1] += 34.0  # every joint but the pelvis 34 mm off: 32 mm per frame
    evaluation = results / "a" / "evaluation"
    write_npz(evaluation / "predictions.npz", poses_3d=pred.astype(np.float32))
    write_npz(evaluation / "targets.npz", poses_3d=gt.astype(np.float32))
    fig = plot_skeletons(collect(results), frames=3)
    titles = [a.get_title() for a in fig.axes]
    assert sum(t.startswith("ground truth") for t in titles) == 3
    assert [t for t in titles if t.startswith("a\n")] == ["a\n32 mm"] * 3
    assert any("frame 1\n" in t or t.endswith("frame 1") for t in titles)  # frames 1, 4, 7 of 9


def write_bench_params(path, ablations, detector_table=None, seeds=3):
    import yaml

    bench = {"seeds": seeds, "experiments": [], "ablations": ablations}
    if detector_table:
        bench["detector_table"] = detector_table
    path.write_text(yaml.safe_dump({"bench": bench}, sort_keys=False))
    return path


@pytest.fixture
def bench(tmp_path):
    """pot over 3 seeds 40/42/44 mm; pot-plain 41/45/46 (paired differences 1, 3, 2: mean 2, std 1); pot-nokp
    only seeds 0 and 1, 38/41 (differences -2, -1: mean -1.5, std 0.707); det: a 2D detector, AP 1, seeds 0, 1."""
    results = tmp_path / "results"
    for base, values in {"pot": [40.0, 42.0, 44.0], "pot-plain": [41.0, 45.0, 46.0], "pot-nokp": [38.0, 41.0]}.items():
        for k, value in enumerate(values):
            write_evaluation(results, f"{base}-seed{k}" if k else base, {"Walking": (mm(value), 10)})
    write_detector_evaluation(results, "det")
    write_detector_evaluation(results, "det-seed1")
    params = write_bench_params(tmp_path / "params.yaml", [
        {"effect": "PO-SA -> plain", "baseline": "pot", "variant": "pot-plain", "paper": 1.2, "source": "POT Table 3"},
        {"effect": "no keypoint embedding", "baseline": "pot", "variant": "pot-nokp", "paper": 0.5},
        {"effect": "never run", "baseline": "pot", "variant": "pot-absent", "paper": -3.0},
        {"effect": "no paper value", "baseline": "pot", "variant": "pot-plain", "paper": None},
    ], {"models": {"POT+UGRN": {"gt": "pot", "synthetic": "pot-nokp", "hrnet-att": "pot-absent"}},
        "ap": {"hrnet-att": "det"}})
    return results, params


def test_bench_ablation_table_pairs_runs_by_seed(bench, tmp_path, run_cli):
    results, params = bench
    code, out, err = run_cli("report", "--results", results, "--bench", params, "--out", tmp_path / "r")
    assert code == 0, err
    md = (tmp_path / "r" / "bench.md").read_text()
    notes = md.partition("## Notes")[2]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    # mean ± std of the paired differences; the paper's effect; sign; |effect| > spread
    assert lines["PO-SA -> plain"] == ("| PO-SA -> plain | pot | pot-plain | 42.0 ± 2.0 | 44.0 ± 2.6 | +2.0 ± 1.0 | 3 "
                                       "| +1.2 | POT Table 3 | yes | yes |")
    assert lines["no keypoint embedding"] == ("| no keypoint embedding | pot | pot-nokp | 42.0 ± 2.0 | 39.5 ± 2.1 "
                                              "| -1.5 ± 0.7[1] | 2 | +0.5 |  | no | yes |")
    assert lines["never run"] == "| never run | pot | pot-absent | 42.0 ± 2.0 | — | —[2] | 0 | -3.0 |  | — | — |"
    assert lines["no paper value"].endswith("| +2.0 ± 1.0 | 3 | — |  | — | yes |")
    assert "1. pot-nokp-seed2: not evaluated yet" in notes and "2 of 3 runs of pot-nokp counted" in notes
    assert "2. pot-absent, pot-absent-seed1, pot-absent-seed2: not evaluated yet" in notes
    # the detector table: models x 2D sources, AP (%) row; missing runs are dashes with their footnotes
    assert "| Model | gt | synthetic | hrnet-att |" in md
    assert "| POT+UGRN | 42.0 ± 2.0 | 39.5 ± 2.1[1] | —[2] |" in md
    assert "| 2D AP (%) | n/a | n/a | 100.0 ± 0.0[3] |" in md
    assert "3. det-seed2: not evaluated yet" in notes
    html = (tmp_path / "r" / "bench.html").read_text()
    assert "+2.0 ± 1.0" in html and "data:image/png;base64," in html
    assert (tmp_path / "r" / "bench_ablations.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "r" / "results.md").exists()  # the usual report too


def test_a_run_that_loses_its_evaluation_is_no_longer_a_number(bench, tmp_path, run_cli):
    results, params = bench
    (results / "pot-plain-seed1" / "evaluation" / "metrics.json").unlink()  # differences 1 and 2 remain
    code, _, err = run_cli("report", "--results", results, "--bench", params, "--out", tmp_path / "r")
    assert code == 0, err
    md = (tmp_path / "r" / "bench.md").read_text()
    assert "| PO-SA -> plain | pot | pot-plain | 42.0 ± 2.0 | 43.5 ± 3.5 | +1.5 ± 0.7[1] | 2 |" in md
    assert "pot-plain-seed1: not evaluated yet" in md


@pytest.mark.parametrize("bench_section, problem", [
    ({"seeds": 0}, "bench.seeds: expected an integer >= 1"),
    ({"ablations": [{"effect": "x", "baseline": "a"}]}, "bench.ablations[0].variant: missing"),
    ({"ablations": [{"effect": "x", "baseline": "a", "variant": "b", "paper": "big"}]}, "bench.ablations[0].paper"),
    ({"detector_table": {"models": {"POT": ["a"]}}}, "bench.detector_table.models"),
    ({"ablations": [{"effect": "x", "baseline": "pot", "variant": "pot-plian"}]},
     "bench.ablations[0].variant: no experiment 'pot-plian' in the experiments section"),
])
def test_a_bad_bench_section_is_a_one_line_error_and_writes_nothing(results, tmp_path, run_cli, bench_section,
                                                                    problem):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"experiments": {"pot": {}, "pot-plain": {}}, "bench": bench_section}))
    code, _, err = run_cli("report", "--results", results, "--bench", params, "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"poselift: error: {params}: ") and problem in err
    assert not (tmp_path / "r").exists()


def test_lifting_by_images_attention_picture_is_in_the_report_and_only_where_one_was_drawn(results, tmp_path,
                                                                                            run_cli):
    """An evaluation with an attention.png (Lifting by Image) puts reports/attention.png, showing it, in the
    report; without one there is no such figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    code, _, err = run_cli("report", "--results", results, "--out", tmp_path / "plain")
    assert code == 0, err
    assert not (tmp_path / "plain" / "attention.png").exists()
    assert "attention.png" not in (tmp_path / "plain" / "results.md").read_text()

    picture = np.zeros((60, 40, 3))
    picture[10:30, 10:20] = (0.0, 1.0, 0.0)  # a green block the report's figure must show
    plt.imsave(results / "a" / "evaluation" / "attention.png", picture)
    code, _, err = run_cli("report", "--results", results, "--out", tmp_path / "lbi")
    assert code == 0, err
    assert "![Lifting by Image: where the keypoints look](attention.png)" in (tmp_path / "lbi" / "results.md").read_text()
    assert 'id="attention"' in (tmp_path / "lbi" / "results.html").read_text()
    figure = plt.imread(tmp_path / "lbi" / "attention.png")[..., :3]
    green = (figure[..., 1] > 0.9) & (figure[..., 0] < 0.1) & (figure[..., 2] < 0.1)
    assert green.sum() > 100  # the picture is drawn in it, not only named
