# Wiring shared by the rules: poselift.workflow's helpers bound to this run's config and params file.
#
# The logic (what params.yaml asks for, the file layout, prepare/detect command lines, code fingerprints)
# lives in src/poselift/workflow.py, tested in tests/test_workflow_helpers.py.

import os
import sys
from pathlib import Path

from poselift.workflow import REPORT, Workflow, code_digests, ensure_output_cache, slurm_partitions

# The CLI reads the same file the workflow was configured with (`configfile:` or --configfile).
PARAMS = Path(workflow.configfiles[-1]) if workflow.configfiles else Path("params.yaml")
wf = Workflow(config, PARAMS)
DEVICE = wf.device  # train/evaluate --device; the local profile sets cpu

# Between-workflow output cache (rules with `cache:`): the environment's location, else one per user, so
# that every project of that user shares it. Set SNAKEMAKE_OUTPUT_CACHE to a group folder to share more.
ensure_output_cache(os.environ)

stage_config, num_stages, validation_split = wf.stage_config, wf.num_stages, wf.validation_split
experiment_inputs, data_args, last_checkpoint = wf.experiment_inputs, wf.data_args, wf.last_checkpoint
init_checkpoints, init_args = wf.init_checkpoints, wf.init_args
train_resources, evaluate_resources, priority = wf.train_resources, wf.evaluate_resources, wf.priority
all_prepared, all_detections, all_checkpoints, all_metrics = (
    wf.all_prepared, wf.all_detections, wf.all_checkpoints, wf.all_metrics)
report_names = wf.report_names
bench_metrics, bench_report_names = wf.bench_metrics, wf.bench_report_names
source_files, prepare_args = wf.source_files, wf.prepare_args
all_renders, render_command, render_code, report_crops_args, report_sheets, report_attention = (
    wf.all_renders, wf.render_command, wf.render_code, wf.report_crops_args, wf.report_sheets, wf.report_attention)
imported_detections, detect_command = wf.imported_detections, wf.detect_command
detect_inputs = lambda w: wf.detect_inputs(w.dataset, w.detector)
# wildcard constraints: which rule makes which file
NETWORK_DETECTORS = wf.wildcard_names(wf.network_detectors())
FEATURE_DETECTORS = wf.wildcard_names(wf.feature_detectors())  # their maps feed Lifting by Image
LIFTING_EXPERIMENTS = wf.wildcard_names(wf.names_of_task("lifting", "image_lifting"))  # 3D: the lifting files
DETECTOR_EXPERIMENTS = wf.wildcard_names(wf.names_of_task("heatmaps"))

# Fingerprint of the code each command runs: a param of its rule (see data.smk).
CODE = code_digests()

if workflow.is_main_process:
    for _line in wf.left_out_messages():
        print(_line, file=sys.stderr)


onstart:
    # Under the Slurm executor: a train job no partition can ever run would pend forever without a word.
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        for _line in wf.unschedulable(slurm_partitions()):
            print(_line, file=sys.stderr)
