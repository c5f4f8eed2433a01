"""params.yaml's datasets / models / experiments sections (poselift.experiments) and their one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from poselift.errors import InputError
from poselift.experiments import QUIET_DEFAULTS, STAGE_KEYS, experiment_names, load_experiment
from poselift.models import MODELS
from poselift.training.tasks.lifting import LiftingTask
from poselift.workflow import Workflow

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "datasets": {"toy": {"reader": "h36m", "validation_split": "test", "source": "somewhere"}},
    "models": {"small": {"class": "martinez", "linear_size": 16, "num_blocks": 1},
               "conv": {"class": "videopose3d", "filter_widths": [3, 3], "channels": 8}},
    "experiments": {"x": {"dataset": "toy", "detector": "synthetic", "stages": [
        {"name": "a", "model": "small", "epochs": 2, "batch_size": 8, "lr": 1e-3, "losses": {"mpjpe": 1.0}},
        {"name": "b", "model": "small", "epochs": 3, "batch_size": 8, "lr": "1e-4", "losses": {"mpjpe": 1.0},
         "init": {"": 1}, "freeze": ["blocks"], "schedule": {"gamma": 0.96, "every": 4}},
    ]}},
}


def _write(tmp_path, params) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _edit(change) -> dict:
    import copy

    params = copy.deepcopy(GOOD)
    change(params)
    return params


def test_a_good_experiment_is_read_with_defaults_and_layout(tmp_path):
    exp = load_experiment("x", _write(tmp_path, GOOD))
    a, b = exp.stages
    assert (a.number, a.name, a.model.cls, a.model.args) == (1, "a", "martinez", {"linear_size": 16, "num_blocks": 1})
    assert (a.task, a.optimizer, a.schedule, a.max_norm, a.select) == ("lifting", "adam", {"gamma": 1.0, "every": 1},
                                                                        None, "best")
    assert a.options == {"window": 1, "flip_augment": False, "flip_test": False, "validation_frames": 20000,
                         "windows_per_epoch": None, "loss_scaled_gradient": False,
                         "evaluation_root": "aligned"}  # the lifting task's keys and defaults
    assert b.lr == 1e-4  # PyYAML reads "1e-4" as a string; it is accepted as a number
    assert (b.init, b.freeze, b.schedule) == ({"": 1}, ["blocks"], {"gamma": 0.96, "every": 4})
    assert exp.dataset.validation_split == "test" and exp.dataset.options == {"source": "somewhere"}
    assert exp.prepared_path() == Path("data/prepared/toy.h5")
    assert exp.detections_path() == Path("data/detections/toy/synthetic.h5")
    assert exp.stage_dir(2) == Path("results/x/stage2")
    assert exp.evaluation_dir() == Path("results/x/evaluation")
    # a key of QUIET_DEFAULTS (precision) is left out at its default: older checkpoints' configs stay equal
    assert set(a.config()) == {"number", *STAGE_KEYS, *LiftingTask.stage_keys} - set(QUIET_DEFAULTS)


def test_the_prepared_detector_means_no_detections_file(tmp_path):
    exp = load_experiment("x", _write(tmp_path, _edit(lambda p: p["experiments"]["x"].update(detector="prepared"))))
    assert exp.detections_path() is None


def test_every_repository_experiment_is_valid():
    """The shipped params.yaml: every preset names a real class with real constructor arguments, every
    loss term exists, every init/freeze refers to an earlier stage and a real submodule, and every network
    detector names an experiment that trains a 2D detector."""
    import torch

    from poselift.training.stage import submodule

    names = experiment_names(REPO / "params.yaml")
    assert {"pot-ugrn-cpu", "mixste-cpu", "pot-ugrn-h36m", "mixste-h36m", "poseformer-h36m"} <= set(names)
    for name in names:
        exp = load_experiment(name, REPO / "params.yaml")
        for stage in exp.stages:
            try:
                with torch.device("meta"):  # shapes only: paper-sized models cost no memory or time
                    model = MODELS[stage.model.cls](**stage.model.args)
            except (RuntimeError, NotImplementedError):  # a constructor that needs real values
                model = MODELS[stage.model.cls](**stage.model.args)
            if stage.task in ("lifting", "image_lifting"):  # 3D: the lifting contract
                assert getattr(model, "output_frames", None) in ("centre", "all"), stage.model.cls
            else:  # a 2D detector: its task's (heatmaps) targets
                assert stage.task == "heatmaps" and model.heatmap_sigmas, stage.model.cls
            for sub in [*stage.init, *stage.freeze]:
                submodule(model, sub, "params.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    wf = Workflow(params, REPO / "params.yaml")
    assert set(wf.network_detectors()) == {"hrnet-att-cpu", "hrnet-cpu", "cpn-cpu", "hrnet-att-w32-h36m",
                                           "hrnet-w32-h36m", "cpn-r50-h36m"}
    for name, network in wf.network_detectors().items():
        assert wf.experiment(network["experiment"]).task == "heatmaps", name
    # every bench run parses (seeded runs included), and `all` builds none of the bench-only experiments
    runs = wf.bench_selected()
    assert len(runs) == len(set(runs)) and all(wf.experiment(run).stages for run in runs)
    assert not [n for n in wf.selected() if wf.experiment(n).bench_only]


BAD = [
    ("unknown model class", lambda p: p["models"]["small"].update({"class": "nope"}),
     "models.small.class: unknown model class 'nope'"),
    ("unknown loss term", lambda p: p["experiments"]["x"]["stages"][0]["losses"].update(l3=1.0),
     "experiments.x.stages[1].losses: unknown loss term 'l3'"),
    ("missing key", lambda p: p["experiments"]["x"]["stages"][0].pop("epochs"),
     "experiments.x.stages[1]: missing key 'epochs'"),
    ("misspelt key", lambda p: p["experiments"]["x"]["stages"][0].update(learning_rate=1.0),
     "experiments.x.stages[1].learning_rate: unknown key"),
    ("bad number", lambda p: p["experiments"]["x"]["stages"][0].update(lr="fast"),
     "experiments.x.stages[1].lr: expected a finite number"),
    ("init from a later stage", lambda p: p["experiments"]["x"]["stages"][0].update(init={"": 2}),
     "experiments.x.stages[1].init.(whole model): stage 2 is not an earlier stage"),
    ("unknown model argument", lambda p: p["models"]["small"].update(width=3),
     "models.small.width: not an argument of LinearBaseline"),
    ("unknown dataset", lambda p: p["experiments"]["x"].update(dataset="elsewhere"),
     "experiments.x.dataset: unknown dataset 'elsewhere'"),
    ("unknown reader", lambda p: p["datasets"]["toy"].update(reader="nope"),
     "datasets.toy.reader: unknown reader 'nope'"),
    ("no stages", lambda p: p["experiments"]["x"].update(stages=[]),
     "experiments.x.stages: expected a non-empty list"),
]


@pytest.mark.parametrize("change,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_params_exit_2_with_one_line_naming_the_file_and_key(tmp_path, run_cli, change, message):
    params = _write(tmp_path, _edit(change))
    code, out, err = run_cli("train", "--params", params, "--experiment", "x", "--stage", "1",
                             "--out", tmp_path / "out", "--tracking-uri", "off")
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"poselift: error: {params}: ")
    assert message in err
    assert not (tmp_path / "out").exists()


def test_stage_number_out_of_range_and_unknown_experiment(tmp_path, run_cli):
    params = _write(tmp_path, GOOD)
    code, _, err = run_cli("train", "--params", params, "--experiment", "x", "--stage", "3", "--tracking-uri", "off")
    assert code == 2 and f"{params}: experiments.x: no stage 3 (stages are numbered 1..2)" in err
    code, _, err = run_cli("evaluate", "--params", params, "--experiment", "y", "--tracking-uri", "off")
    assert code == 2 and f"{params}: experiments: no experiment 'y' (known: x)" in err
    code, _, err = run_cli("train", "--params", tmp_path / "absent.yaml", "--experiment", "x", "--stage", "1")
    assert code == 2 and "absent.yaml: file not found" in err


def test_a_yaml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("experiments: {x: [\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_experiment("x", path)


def test_a_milestone_schedule_steps_the_learning_rate_at_the_listed_epochs(tmp_path):
    """[HRc]'s LR_STEP [170, 200] x 0.1, shrunk: lr 1e-3 for epochs 0-1, 1e-4 for 2, 1e-5 from 3 on."""
    import torch

    from poselift.training.stage import make_optimizer

    params = _edit(lambda p: p["experiments"]["x"]["stages"][0].update(schedule={"gamma": 0.1, "milestones": [2, 3]}))
    stage = load_experiment("x", _write(tmp_path, params)).stage(1)
    assert stage.schedule == {"gamma": 0.1, "milestones": [2, 3]}
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), stage)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5, 1e-5])


@pytest.mark.parametrize("schedule, problem", [
    ({"gamma": 0.1, "milestones": [3, 2]}, "epochs must increase"),
    ({"gamma": 0.1, "milestones": []}, "expected a list of epochs"),
    ({"gamma": 0.1, "every": 2, "milestones": [2]}, "not both"),
    ({"gamma": 0.1, "milestone": [2]}, "milestones"),  # a typo names the key it meant
])
def test_a_bad_milestone_schedule_is_one_line_naming_the_key(tmp_path, schedule, problem):
    params = _edit(lambda p: p["experiments"]["x"]["stages"][0].update(schedule=schedule))
    with pytest.raises(InputError) as e:
        load_experiment("x", _write(tmp_path, params))
    assert problem in str(e.value) and "schedule" in str(e.value) and "\n" not in str(e.value)


def test_init_may_name_a_checkpoint_file_which_the_workflow_declares_as_an_input(tmp_path):
    params = _edit(lambda p: p["experiments"]["x"]["stages"][1].update(init={"": 1, "blocks": "weights/w32.pt"}))
    path = _write(tmp_path, params)
    exp = load_experiment("x", path)
    assert (exp.init_sources(2), exp.init_files(2)) == ([1], ["weights/w32.pt"])
    wf = Workflow(yaml.safe_load(path.read_text()), path)
    assert wf.init_checkpoints("x", 2) == {"stage1": "results/x/stage1/checkpoint.pt", "init0": "weights/w32.pt"}
    bad = _edit(lambda p: p["experiments"]["x"]["stages"][1].update(init={"blocks": "weights/w32.pth"}))
    with pytest.raises(InputError, match=r"init.blocks: expected an earlier stage's number, another experiment's stage"):
        load_experiment("x", _write(tmp_path, bad))


def test_init_may_name_another_experiments_stage_which_seeded_runs_follow(tmp_path):
    """init: {sub: <experiment>/<N>}: that experiment's stage-N checkpoint, a dependency the workflow wires (one
    Stage 1 under several Stage 2 variants is trained once); seeded run k reads run k's when the other
    experiment is run with seeds too, else the one run."""
    def change(p):
        p["experiments"]["y"] = {"dataset": "toy", "detector": "synthetic",
                                 "stages": [{**p["experiments"]["x"]["stages"][1], "init": {"": "x/1"}}]}
        p["experiments"]["z"] = {"dataset": "toy", "detector": "synthetic",
                                 "stages": [{**p["experiments"]["x"]["stages"][1], "init": {"": "x/2"}}]}
        p["bench"] = {"seeds": 2, "experiments": ["x", "y", "z"]}
    params = _edit(change)
    path = _write(tmp_path, params)
    assert load_experiment("y", path).stages[0].init == {"": "results/x/stage1/checkpoint.pt"}
    assert load_experiment("y-seed1", path).init_files(1) == ["results/x-seed1/stage1/checkpoint.pt"]
    wf = Workflow(yaml.safe_load(path.read_text()), path)
    assert wf.init_checkpoints("z-seed1", 1) == {"init0": "results/x-seed1/stage2/checkpoint.pt"}
    assert wf.missing_data("y") == [] and wf.missing_data("y-seed1") == []  # made by x's train rule, not missing
    params["bench"]["experiments"] = ["y"]  # x is not seeded: every run of y starts from x's one run
    assert load_experiment("y-seed1", _write(tmp_path, params)).init_files(1) == ["results/x/stage1/checkpoint.pt"]
    for ref, problem in [("w/1", "init.(whole model): unknown experiment 'w'"),
                         ("x/3", "init.(whole model): experiment 'x' has no stage 3"),
                         ("y/1", "init.(whole model): 'y/1' is this experiment: name its stage by number")]:
        bad = _edit(lambda p: (change(p), p["experiments"]["y"]["stages"][0].update(init={"": ref})))
        with pytest.raises(InputError, match=re.escape(problem)):
            load_experiment("y", _write(tmp_path, bad))
