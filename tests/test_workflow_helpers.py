"""poselift.workflow without Snakemake: which experiments `all` builds and why others are left out, the stage
params and --init arguments of a two-stage experiment, prepare's and detect's command lines, the output-cache
default, and the code fingerprint that reruns a rule when the code it runs changes."""

from __future__ import annotations

import copy
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from poselift.errors import InputError
from poselift.workflow import Workflow, code_digest, ensure_output_cache

STAGE1 = {"name": "pot", "model": "pot-tiny", "epochs": 1, "batch_size": 8, "lr": 1e-3, "losses": {"mpjpe": 1.0}}
STAGE2 = {"name": "ugrn", "model": "pot-ugrn-tiny", "epochs": 1, "batch_size": 8, "lr": 1e-3,
          "losses": {"mpjpe": 1.0}, "init": {"pot": 1}, "freeze": ["pot"]}


def params() -> dict:
    """A bandai experiment (no source needed), an own-2D one, and an h36m one lacking its source and its
    imported CPN detections."""
    return {
        "detectors": {"synthetic": {"sigma_px": {}}},
        "datasets": {"bandai-cpu": {"reader": "bandai", "subset": "cpu", "validation_split": "test"},
                     "h36m": {"reader": "h36m"}},
        "models": {"pot-tiny": {"class": "pot", "dim": 12}, "pot-ugrn-tiny": {"class": "pot-ugrn", "dim": 12}},
        "experiments": {
            "two": {"dataset": "bandai-cpu", "detector": "synthetic", "stages": [STAGE1, STAGE2]},
            "paper": {"dataset": "h36m", "detector": "cpn", "stages": [STAGE1]},
            "own": {"dataset": "bandai-cpu", "detector": "prepared", "stages": [STAGE1]},
        },
    }


def test_all_leaves_out_an_experiment_without_data_and_says_what_is_missing():
    wf = Workflow(params(), "my-params.yaml")
    assert wf.missing_data("paper") == ["datasets.h36m.source", "detectors.cpn.import.h36m"]
    assert wf.missing_data("two") == [] and wf.missing_data("own") == []  # bandai needs no source
    assert wf.selected() == ["two", "own"]
    assert wf.left_out_messages() == [
        "poselift workflow: `all` leaves out paper: params.yaml does not set datasets.h36m.source, "
        "detectors.cpn.import.h36m"]
    assert wf.all_prepared() == ["data/prepared/bandai-cpu.h5"]
    assert wf.all_detections() == ["data/detections/bandai-cpu/synthetic.h5"]  # none for own 2D
    assert wf.all_metrics() == ["results/two/evaluation/metrics.json", "results/own/evaluation/metrics.json",
                                "results/mean-pose@bandai-cpu/evaluation/metrics.json"]  # + the dataset's baseline

    # given a source and the imported detections, it is built, and no message is printed
    p = params()
    p["datasets"]["h36m"]["source"] = "h36m-src"
    p["detectors"]["cpn"] = {"import": {"h36m": "cpn.npz"}}
    wf = Workflow(p)
    assert wf.selected() == ["two", "paper", "own"] and wf.left_out_messages() == []
    assert "data/detections/h36m/cpn.h5" in wf.all_detections()


def test_mistakes_name_the_params_file_and_the_key():
    wf = Workflow(params(), "my-params.yaml")
    with pytest.raises(InputError, match=r"^my-params.yaml: experiments: no experiment 'x' \(known: two, paper, own\)"):
        wf.experiment("x")
    with pytest.raises(InputError, match=r"^my-params.yaml: experiments.two: no stage 3 \(stages are numbered 1..2\)"):
        wf.stage_config("two", 3)
    p = params()
    del p["experiments"]["own"]["stages"]
    with pytest.raises(InputError, match="experiments.own: missing key 'stages'"):
        Workflow(p).selected()
    p = copy.deepcopy(params())
    p["experiments"]["two"]["stages"][1]["lr"] = "fast"  # checked at planning time, as the CLI checks it
    with pytest.raises(InputError, match=r"experiments.two.stages\[2\].lr: expected a finite number, got 'fast'"):
        Workflow(p).selected()


def test_stage_config_spells_out_the_model_preset_and_defaults_without_changing_the_config():
    config = params()
    wf = Workflow(config)
    stage = wf.stage_config("two", 2)
    assert stage["model"] == {"preset": "pot-ugrn-tiny", "class": "pot-ugrn", "args": {"dim": 12}}
    assert stage["init"] == {"pot": 1} and stage["lr"] == 1e-3
    assert stage["task"] == "lifting" and stage["window"] == 1 and stage["seed"] == 0  # defaults filled in
    assert config["experiments"]["two"]["stages"][1]["model"] == "pot-ugrn-tiny"  # a copy was changed
    assert wf.validation_split("two") == "test" and wf.validation_split("paper") == "validation"


def test_stage_two_loads_stage_one_checkpoint():
    wf = Workflow(params())
    assert wf.init_checkpoints("two", 1) == {} and wf.init_args("two", 1) == ""
    assert wf.init_checkpoints("two", 2) == {"stage1": "results/two/stage1/checkpoint.pt"}
    assert wf.init_args("two", 2) == "--init 1=results/two/stage1/checkpoint.pt"
    assert wf.last_checkpoint("two") == "results/two/stage2/checkpoint.pt"
    assert wf.all_checkpoints()[:2] == ["results/two/stage1/checkpoint.pt", "results/two/stage2/checkpoint.pt"]
    assert wf.data_args("two") == ("--input prepared=data/prepared/bandai-cpu.h5 "
                                   "--input detections=data/detections/bandai-cpu/synthetic.h5")
    assert wf.data_args("own") == "--input prepared=data/prepared/bandai-cpu.h5 --input detections=none"
    assert wf.experiment_inputs("own") == {"prepared": "data/prepared/bandai-cpu.h5"}


def test_prepare_args_quote_values_for_the_shell():
    p = params()
    p["datasets"]["odd"] = {"reader": "h36m", "source": "my data/it's here", "max_frames": 10,
                            "validation_split": "test"}
    args = Workflow(p).prepare_args("odd")
    assert args == "h36m --source 'my data/it'\"'\"'s here' --max-frames 10"
    assert shlex.split(args) == ["h36m", "--source", "my data/it's here", "--max-frames", "10"]
    assert Workflow(p).prepare_args("bandai-cpu") == "bandai --subset cpu"  # validation_split is train's


def test_source_files_list_a_folder_recursively(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    for name in ("b.npz", "sub/a.npz"):
        (tmp_path / "src" / name).write_bytes(b"x")
    p = params()
    p["datasets"]["h36m"]["source"] = str(tmp_path / "src")
    p["datasets"]["one"] = {"reader": "h36m", "source": "file.npz"}
    wf = Workflow(p)
    assert wf.source_files("h36m") == [str(tmp_path / "src" / "b.npz"), str(tmp_path / "src" / "sub" / "a.npz")]
    assert wf.source_files("one") == ["file.npz"] and wf.source_files("bandai-cpu") == []


def test_detect_command_computes_or_imports():
    p = params()
    p["detectors"]["cpn"] = {"import": {"h36m": "cpn dets.npz"}}
    wf = Workflow(p, "conf/params.yaml")
    assert wf.detect_command("bandai-cpu", "synthetic") == (
        "poselift detect --prepared data/prepared/bandai-cpu.h5 --detector synthetic --params conf/params.yaml")
    assert wf.detect_inputs("bandai-cpu", "synthetic") == {"prepared": "data/prepared/bandai-cpu.h5"}
    assert wf.imported_detections("h36m", "cpn") == "cpn dets.npz"
    assert wf.detect_command("h36m", "cpn") == (
        "poselift import-detections --prepared data/prepared/h36m.h5 --source 'cpn dets.npz'")
    assert wf.detect_inputs("h36m", "cpn") == {"prepared": "data/prepared/h36m.h5", "source": "cpn dets.npz"}
    assert wf.imported_detections("bandai-cpu", "cpn") is None  # imported for h36m only


def test_output_cache_defaults_to_one_per_user(tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert ensure_output_cache(environ) == str(tmp_path / "cache" / "snakemake-output-cache")
    assert environ["SNAKEMAKE_OUTPUT_CACHE"] == str(tmp_path / "cache" / "snakemake-output-cache")
    assert (tmp_path / "cache" / "snakemake-output-cache").is_dir()
    environ = {"XDG_CACHE_HOME": str(tmp_path / "x"), "SNAKEMAKE_OUTPUT_CACHE": "s3://bucket/cache"}
    assert ensure_output_cache(environ) == "s3://bucket/cache" and not (tmp_path / "x").exists()


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `wfpkg` on sys.path: a imports b (relatively), b imports sub.c (inside a function), d is
    unrelated; a manifest file sits beside c."""
    root = tmp_path / "wfpkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def load():\n    from wfpkg.sub import c\n    return c\n",
        "d.py": "X = 1\n",
        "sub/__init__.py": "",
        "sub/c.py": "Y = 2\n",
        "sub/manifest.json": "{}\n",
    }
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "wfpkg" or m.startswith("wfpkg.")]:
        del sys.modules[name]


def test_code_digest_follows_imports_transitively(fake_package):
    def digest():
        return code_digest("wfpkg.a", root="wfpkg")

    before = digest()
    assert digest() == before  # deterministic
    (fake_package / "d.py").write_text("X = 2\n")  # not imported by a: no change
    assert digest() == before
    (fake_package / "sub" / "c.py").write_text("Y = 3\n")  # imported by b, imported by a
    after_c = digest()
    assert after_c != before
    (fake_package / "sub" / "manifest.json").write_text('{"n": 1}\n')  # data beside an imported module
    assert digest() not in (before, after_c)
    assert code_digest("wfpkg.d", root="wfpkg") != code_digest("wfpkg.sub.c", root="wfpkg")



def test_code_digest_follows_modules_named_in_strings(fake_package):
    (fake_package / "e.py").write_text("import importlib\n\nMOD = importlib.import_module('wfpkg.d')\n")
    before = code_digest("wfpkg.e", root="wfpkg")
    (fake_package / "d.py").write_text("X = 3\n")  # loaded by name only
    assert code_digest("wfpkg.e", root="wfpkg") != before


@pytest.mark.parametrize("command, module", [("prepare", "data/bandai.py"), ("prepare", "data/h36m.py"),
                                             ("detect", "detection/synthetic.py"),
                                             ("train", "training/tasks/lifting.py"), ("train", "lifting/pot.py"),
                                             ("evaluate", "lifting/inference.py")])
def test_editing_the_code_a_command_runs_changes_its_fingerprint(tmp_path, command, module):
    """The fingerprint that decides reruns and the between-workflow cache key covers the modules a command
    reaches through its registries (readers, detectors, tasks, models), not only its direct imports."""
    import shutil
    import subprocess

    import poselift

    copy = tmp_path / "src"
    shutil.copytree(Path(poselift.__file__).parent, copy / "poselift",
                    ignore=shutil.ignore_patterns("__pycache__"))

    def digest() -> str:
        code = f"from poselift.workflow import code_digest; print(code_digest('poselift.commands.{command}'))"
        env = {**os.environ, "PYTHONPATH": str(copy)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    before = digest()
    target = copy / "poselift" / module
    target.write_text(target.read_text() + "\n# edited\n")
    assert digest() != before


def test_the_workflow_wiring_is_in_no_commands_fingerprint():
    """Editing poselift.workflow (e.g. a job's scheduling priority) must not rerun training: no command imports
    it (train stamps its resume state through poselift.fingerprint)."""
    import poselift.workflow
    from poselift.fingerprint import source_files
    from poselift.workflow import COMMANDS

    wiring = Path(poselift.workflow.__file__)
    for command in COMMANDS:
        files = source_files(f"poselift.commands.{command}")
        assert wiring not in files and any(f.name == f"{command}.py" for f in files), command


def test_fingerprints_read_the_code_without_importing_it():
    """Every Snakemake start (and every Slurm job step, which parses the Snakefile again) digests the code of
    all commands: finding their modules must not import them, or each start pays for torch's import."""
    import subprocess

    from poselift.workflow import COMMANDS

    code = ("import sys; from poselift.workflow import COMMANDS, code_digest\n"
            "digests = {c: code_digest(f'poselift.commands.{c}') for c in COMMANDS}\n"
            "print(len(set(digests.values())), sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    assert out == [str(len(COMMANDS)), "[]\n"]  # a digest per command, and no torch module loaded


def test_render_section_wires_the_render_rule_and_the_contact_sheets():
    p = copy.deepcopy(params())
    p["render"] = {"bandai-cpu": {"every": 60, "seed": 3, "full_frames": True}}
    wf = Workflow(p)
    assert wf.all_renders() == ["data/renders/bandai-cpu.h5"]
    assert wf.render_args("bandai-cpu") == "--every 60 --seed 3 --full-frames"
    assert wf.render_command("bandai-cpu", 4) == "poselift render --every 60 --seed 3 --full-frames --workers 4"
    assert wf.render_code("bandai-cpu") == "render"
    assert wf.report_sheets() == ["reports/crops-bandai-cpu.png"]
    assert wf.report_crops_args() == "--crops data/renders/bandai-cpu.h5"
    p["render"]["bandai-cpu"]["colour"] = "red"
    with pytest.raises(InputError, match=r"render.bandai-cpu.colour: unknown key \(known: every, seed, "):
        Workflow(p).renders()
    p["render"] = {"nowhere": {}}
    with pytest.raises(InputError, match=r"datasets.nowhere: missing"):
        Workflow(p).renders()
    # real frames instead of renders: the crops are cut from the dataset's videos
    p["render"] = {"bandai-cpu": {"videos": "/data/h36m", "skip_missing": True}}
    wf = Workflow(p)
    assert wf.render_command("bandai-cpu", 4) == "poselift crops videos --videos /data/h36m --skip-missing"
    assert wf.render_code("bandai-cpu") == "crops" and wf.all_renders() == ["data/renders/bandai-cpu.h5"]
    p["render"]["bandai-cpu"]["seed"] = 1  # a render setting means nothing for real frames
    with pytest.raises(InputError, match=r"render.bandai-cpu.seed: unknown key \(known: videos, pattern, skip_missing\)"):
        Workflow(p).renders()
    assert Workflow(params()).all_renders() == [] and Workflow(params()).report_sheets() == []


# --- the image chain: render -> train a 2D detector -> detect with it -> lift -----------------------------------

DETECTOR_STAGE = {"name": "hrnet", "model": "hrnet-tiny", "task": "heatmaps", "epochs": 1, "batch_size": 8,
                  "lr": 1e-3, "losses": {"heatmap_mse": 1.0}, "input_size": [64, 48]}


def image_params() -> dict:
    """params() plus bandai-cpu rendered, a 2D-detector experiment on its crops, the network detector that
    runs its checkpoint, and a lifting experiment on that detector's 2D."""
    p = copy.deepcopy(params())
    p["render"] = {"bandai-cpu": {"every": 10}}
    p["models"]["hrnet-tiny"] = {"class": "hrnet", "width": 8, "stage_modules": [1, 1, 1], "blocks": 1}
    p["experiments"]["det"] = {"dataset": "bandai-cpu", "stages": [DETECTOR_STAGE]}
    p["detectors"]["mine"] = {"network": "hrnet", "experiment": "det"}
    p["experiments"]["lift"] = {"dataset": "bandai-cpu", "detector": "mine", "stages": [STAGE1]}
    return p


def test_a_network_detector_is_wired_to_its_experiment_and_the_renders():
    wf = Workflow(image_params(), "my-params.yaml")
    assert wf.missing_data("det") == [] and wf.missing_data("lift") == []
    assert wf.network_detectors() == {"mine": {"network": "hrnet", "experiment": "det"}}
    assert wf.selected() == ["two", "own", "det", "lift"]
    assert wf.names_of_task("lifting") == ["two", "paper", "own", "lift"]
    assert wf.names_of_task("heatmaps") == ["det"]
    assert wf.experiment_inputs("det") == {"crops": "data/renders/bandai-cpu.h5",
                                           "prepared": "data/prepared/bandai-cpu.h5"}
    assert wf.detect_inputs("bandai-cpu", "mine") == {"prepared": "data/prepared/bandai-cpu.h5",
                                                      "images": "data/renders/bandai-cpu.h5",
                                                      "checkpoint": "results/det/stage1/checkpoint.pt"}
    assert wf.detect_command("bandai-cpu", "mine") == (
        "poselift detect --prepared data/prepared/bandai-cpu.h5 --detector hrnet --checkpoint "
        "results/det/stage1/checkpoint.pt --images data/renders/bandai-cpu.h5 --device auto")
    assert shlex.split(wf.detect_command("bandai-cpu", "mine"))[:2] == ["poselift", "detect"]
    assert "data/detections/bandai-cpu/mine.h5" in wf.all_detections()
    assert wf.all_metrics() == [f"results/{n}/evaluation/metrics.json" for n in ("two", "own", "det", "lift")] + [
        "results/mean-pose@bandai-cpu/evaluation/metrics.json"]
    assert "results/det/stage1/checkpoint.pt" in wf.all_checkpoints()
    assert wf.wildcard_names(wf.network_detectors()) == "mine"
    assert {n: wf.priority(n) for n in wf.selected()} == {"two": 0, "own": 0, "det": 1, "lift": 1}  # image chain first
    assert wf.wildcard_names(wf.names_of_task("heatmaps")) == "det" and wf.wildcard_names([]) == "(?!)"
    p = image_params()
    p["device"] = "cpu"
    assert Workflow(p).detect_command("bandai-cpu", "mine").endswith(" --device cpu")


def test_image_tokens_may_come_from_another_detector_than_the_2d():
    """Lifting by Image on ground-truth 2D (the paper's ablations) with a network detector's feature maps:
    experiment key `features`; its maps are made by that detector's detect_images_features job."""
    p = image_params()
    p["models"]["lbi-tiny"] = {"class": "lbi-stage1", "feature_channels": 8, "feature_size": [16, 12], "dim": 8,
                               "heads": 2}
    lbi = {"name": "stage1", "model": "lbi-tiny", "epochs": 1, "batch_size": 4, "lr": 1e-3,
           "losses": {"lbi_coarse": 1.0}}
    p["experiments"]["gt-lbi"] = {"dataset": "bandai-cpu", "features": "mine", "stages": [lbi]}
    p["experiments"]["det-lbi"] = {"dataset": "bandai-cpu", "detector": "mine", "stages": [lbi]}
    wf = Workflow(p, "my-params.yaml")
    assert wf.experiment_inputs("gt-lbi") == {"prepared": "data/prepared/bandai-cpu.h5",
                                              "crops": "data/renders/bandai-cpu.h5",
                                              "features": "data/features/bandai-cpu/mine.h5"}  # no detections: own 2D
    assert wf.experiment_inputs("det-lbi")["features"] == "data/features/bandai-cpu/mine.h5"
    assert wf.missing_data("gt-lbi") == [] and wf.feature_detectors() == ["mine"] and wf.priority("gt-lbi") == 1
    del p["render"]
    assert Workflow(p).missing_data("gt-lbi") == ["render.bandai-cpu"]
    p = image_params()
    p["models"]["lbi-tiny"] = {"class": "lbi-stage1", "feature_channels": 8, "feature_size": [16, 12], "dim": 8,
                               "heads": 2}
    p["experiments"]["gt-lbi"] = {"dataset": "bandai-cpu", "features": "synthetic", "stages": [lbi]}
    assert Workflow(p, "my-params.yaml").missing_data("gt-lbi") == [
        "detectors.synthetic (a network detector, for experiments.gt-lbi.features)"]


def test_without_renders_the_image_chain_is_left_out_and_says_so():
    p = image_params()
    del p["render"]
    wf = Workflow(p, "my-params.yaml")
    assert wf.missing_data("lift") == ["render.bandai-cpu"]
    assert wf.missing_data("det") == ["render.bandai-cpu"]  # it trains on the crops as well
    assert wf.selected() == ["two", "own"]
    assert "poselift workflow: `all` leaves out det, lift: params.yaml does not set render.bandai-cpu" in (
        wf.left_out_messages())
    assert not any("renders" in path for path in wf.all_checkpoints() + wf.all_detections())


def test_a_network_detector_must_name_a_detector_experiment_and_a_network():
    p = image_params()
    p["detectors"]["mine"]["experiment"] = "nowhere"
    with pytest.raises(InputError) as e:
        Workflow(p, "my-params.yaml").missing_data("lift")
    assert str(e.value).startswith("my-params.yaml: detectors.mine.experiment: 'nowhere'") and "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"^my-params.yaml: detectors.mine.experiment: 'nowhere'"):
        Workflow(p, "my-params.yaml").detect_inputs("bandai-cpu", "mine")
    p["detectors"]["mine"]["experiment"] = "two"  # an experiment, but a lifting one
    with pytest.raises(InputError, match=r"detectors.mine.experiment: 'two' is not an experiment that trains a 2D"):
        Workflow(p, "my-params.yaml").selected()
    p["detectors"]["mine"] = {"network": "synthetic", "experiment": "det"}
    with pytest.raises(InputError, match=r"^my-params.yaml: detectors.mine.network: 'synthetic' is not a network "
                                         r"detector \(known: hrnet, hrnet-att, cpn\)"):
        Workflow(p, "my-params.yaml").selected()
    p["detectors"]["mine"] = {"network": "hrnet", "experiment": "det", "epochs": 3}
    with pytest.raises(InputError, match=r"detectors.mine.epochs: unknown key \(known: experiment, network\)"):
        Workflow(p, "my-params.yaml").network_detectors()


@pytest.mark.slow
def test_snakemake_plans_the_image_chain(tmp_path):
    """A real dry run: render -> train the detector -> evaluate_detector, and detect_images (not detect) with
    its checkpoint -> train and evaluate the lifting on its 2D; the synthetic 2D still comes from detect.
    Without the render block, both experiments are left out with a message (not a KeyError of the DAG)."""
    from test_workflow import dry_run, find
    from workflow_project import STAGE, TINY_EXPERIMENT, make_project, snakemake, tiny_params, write_params

    root = make_project(tmp_path / "p", {"two": TINY_EXPERIMENT})
    p = tiny_params({"two": TINY_EXPERIMENT})
    p["models"]["hrnet-tiny"] = image_params()["models"]["hrnet-tiny"]
    p["experiments"]["det"] = {"dataset": "tiny", "stages": [DETECTOR_STAGE]}
    p["detectors"]["mine"] = {"network": "hrnet", "experiment": "det"}
    p["experiments"]["lift"] = {"dataset": "tiny", "detector": "mine", "stages": [STAGE]}
    write_params(root, {**p, "render": {"tiny": {"every": 10}}})
    jobs = dry_run(root, "all")
    assert sorted(j["rule"] for j in jobs) == sorted(
        ["prepare", "render", "detect", "detect_images", "train", "train", "train", "train", "evaluate_detector",
         "evaluate", "evaluate", "baseline", "report", "all"])
    assert find(jobs, "render", dataset="tiny")["output"] == ["data/renders/tiny.h5"]
    train = find(jobs, "train", experiment="det", stage="1")
    assert train["input"] == ["data/renders/tiny.h5", "data/prepared/tiny.h5"]
    assert "--input crops=data/renders/tiny.h5" in train["shell"]
    evaluation = find(jobs, "evaluate_detector", experiment="det")
    assert evaluation["output"] == ["results/det/evaluation/metrics.json", "results/det/evaluation/predictions.npz"]
    detect = find(jobs, "detect_images", dataset="tiny", detector="mine")
    assert detect["input"] == ["data/prepared/tiny.h5", "data/renders/tiny.h5", "results/det/stage1/checkpoint.pt"]
    assert detect["output"] == ["data/detections/tiny/mine.h5"] and detect["resources"].get("gpu") == "1"
    assert detect["shell"].startswith("poselift detect --prepared data/prepared/tiny.h5 --detector hrnet "
                                      "--checkpoint results/det/stage1/checkpoint.pt --images data/renders/tiny.h5")
    assert find(jobs, "detect", detector="synthetic")["output"] == ["data/detections/tiny/synthetic.h5"]
    assert find(jobs, "train", experiment="lift", stage="1")["input"] == ["data/prepared/tiny.h5",
                                                                          "data/detections/tiny/mine.h5"]
    assert find(jobs, "evaluate", experiment="lift") and find(jobs, "evaluate", experiment="two")
    assert "--experiment two --experiment det --experiment lift --experiment mean-pose@tiny" in (
        find(jobs, "report")["shell"])

    write_params(root, p)  # no render block: the image chain cannot be made
    proc = snakemake(root, "-n", "all")
    assert "`all` leaves out det, lift: params.yaml does not set render.tiny" in proc.stdout
    assert "results/det" not in proc.stdout and "data/renders" not in proc.stdout


def test_bench_runs_each_experiment_with_seeds_and_all_leaves_bench_only_ones_out():
    p = params()
    p["experiments"]["ablation"] = {"dataset": "bandai-cpu", "detector": "synthetic", "stages": [STAGE1, STAGE2],
                                    "bench_only": True}
    p["bench"] = {"seeds": 3, "experiments": ["two", "ablation"]}
    wf = Workflow(p)
    assert wf.selected() == ["two", "own"]  # `all` (make run): no bench-only experiment, no seeded run
    assert wf.bench_selected() == ["two", "two-seed1", "two-seed2", "ablation", "ablation-seed1", "ablation-seed2"]
    # run k: every stage's seed + k, the rest identical; its checkpoints are its own
    base, run = wf.experiment("ablation"), wf.experiment("ablation-seed2")
    assert [s.seed for s in base.stages] == [0, 0] and [s.seed for s in run.stages] == [2, 2]
    assert run.base == "ablation" and run.seed_offset == 2 and run.bench_only
    assert wf.stage_config("ablation-seed2", 2) == {**wf.stage_config("ablation", 2), "seed": 2}
    assert wf.init_args("ablation-seed2", 2) == "--init 1=results/ablation-seed2/stage1/checkpoint.pt"
    assert "results/ablation-seed1/evaluation/metrics.json" in wf.bench_metrics()
    assert "results/own/evaluation/metrics.json" in wf.bench_metrics()  # the bench report shows `all` too
    with pytest.raises(InputError, match=r"no experiment 'two-seed3'.*bench.seeds"):
        wf.experiment("two-seed3")  # only seeds 0..2 exist

    p["bench"]["experiments"] = ["two"]  # a bench-only experiment nothing builds is a mistake
    with pytest.raises(InputError, match=r"experiments.ablation.bench_only: the experiment is not listed"):
        Workflow(p).bench_selected()
    p["bench"] = {"seeds": 2, "experiments": ["two", "typo"]}
    with pytest.raises(InputError, match=r"bench.experiments: no experiment 'typo'"):
        Workflow(p).bench_selected()


def test_snakemake_plans_the_bench_target(tmp_path):
    """A real dry run of `bench`: `all`, plus each bench experiment's seeded runs trained from their own
    stage I, evaluated, and the bench report over all of them."""
    from test_workflow import dry_run, find
    from workflow_project import TINY_EXPERIMENT, make_project, tiny_params, write_params

    root = make_project(tmp_path / "p", {"two": TINY_EXPERIMENT})
    p = tiny_params({"two": TINY_EXPERIMENT, "abl": {**TINY_EXPERIMENT, "bench_only": True}})
    write_params(root, {**p, "bench": {"seeds": 2, "experiments": ["two", "abl"]}})
    jobs = dry_run(root, "bench")
    trained = sorted((j["wildcards"]["experiment"], j["wildcards"]["stage"]) for j in jobs if j["rule"] == "train")
    assert trained == [(e, s) for e in ("abl", "abl-seed1", "two", "two-seed1") for s in ("1", "2")]
    assert "--init 1=results/abl-seed1/stage1/checkpoint.pt" in find(jobs, "train", experiment="abl-seed1",
                                                                    stage="2")["shell"]
    report = find(jobs, "bench_report")
    assert report["output"] == ["reports/bench/bench.md", "reports/bench/bench.html", "reports/bench/bench_ablations.png"]
    assert ("--experiment two --experiment mean-pose@tiny --experiment two-seed1 --experiment abl "
            "--experiment abl-seed1 --bench params.yaml" in report["shell"])
    assert find(jobs, "report")  # `all`'s report too
    assert "abl" not in find(jobs, "report")["shell"]
