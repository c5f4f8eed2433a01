# poselift's workflow: prepare -> render -> detect -> train stage I -> train stage II (on the frozen stage I) ... ->
# evaluate -> report, for every experiment of params.yaml. Each rule only wires files to a `poselift`
# command; its log is in logs/, its timing in logs/benchmarks/.
#
#   snakemake --profile slurm all                               on a Slurm cluster (GPU jobs: resources gpu=1)
#   snakemake --profile workflow/profiles/local all             here, everything on the CPU (= make run)
#   snakemake --report reports/report.html                      the self-contained HTML report
#
# Phase targets (what `dvc repro` runs, one DVC stage each): prepared, renders, detections, results, report.
# The longer `bench` target (workflow/rules/bench.smk): the ablation grid with seeds, the detector table.

configfile: "params.yaml"


report: "workflow/report/workflow.rst"


wildcard_constraints:
    dataset=r"[^/]+",
    detector=r"[^/]+",
    experiment=r"[^/@]+",  # "@" marks the per-dataset baselines (results/mean-pose@<dataset>)
    stage=r"[1-9][0-9]*",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"


rule all:
    """Every experiment of params.yaml, evaluated, and the report. The checkpoints and evaluations are named
    here too, not only as the report's inputs: a deleted results/<experiment>/ is rebuilt (and the report with
    it) even though the report's files are newer than what is left."""
    default_target: True
    input:
        all_checkpoints(),
        all_metrics(),
        REPORT.values(),


rule prepared:
    """Phase target: every dataset the experiments use."""
    input:
        all_prepared(),


rule renders:
    """Phase target: the rendered benchmark of every dataset in params.yaml `render`."""
    input:
        all_renders(),


rule detections:
    """Phase target: every (dataset, detector) pair the experiments use."""
    input:
        all_detections(),


rule results:
    """Phase target: every stage of every experiment trained, and every experiment evaluated."""
    input:
        all_checkpoints(),
        all_metrics(),
