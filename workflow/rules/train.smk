# Training (stage by stage) and evaluation: GPU jobs on a cluster, the CPU under the local profile. Each
# stage's job asks for its `resources` of params.yaml (gpus, cpus, mem_gb, hours; defaults sized to the
# experiment: poselift.experiments.RESOURCE_KEYS, computed by poselift.workflow's train_resources); a stage of
# N > 1 GPUs trains with N processes (`poselift train --processes N`: torchrun, one process a GPU). Resources
# are not params: changing them reruns nothing. Generic over experiments and stages: stage N of experiment E
# reads E's data and the checkpoints of the earlier stages its `init` names (stage II on the frozen stage I, or
# any later stage on any earlier one).
#
# The params carry each job's own settings (the stage's section of params.yaml with its model preset, the
# code fingerprint), so Snakemake reruns exactly the jobs whose settings changed, and what depends on them.
# The device is not a param: a model trained on the GPU is not rebuilt for running the CPU profile.
# Snakemake reruns a stage when something it depends on changed, or when an earlier attempt died; it declares
# every file of the stage folder, so a failed or killed job leaves none of them behind. The training state is
# mirrored each epoch outside the outputs (--keep-state .snakemake/poselift-state/...): a rerun after a killed
# job resumes from the last finished epoch when the stage's settings and code are the same, and starts anew
# otherwise; the state is removed when the stage completes.


rule train:
    """Stage N of an experiment (`poselift train`): checkpoint.pt, last.pt and history.json."""
    input:
        unpack(lambda w: experiment_inputs(w.experiment)),
        unpack(lambda w: init_checkpoints(w.experiment, int(w.stage))),
    output:
        checkpoint="results/{experiment}/stage{stage}/checkpoint.pt",
        last="results/{experiment}/stage{stage}/last.pt",
        history="results/{experiment}/stage{stage}/history.json",
    params:
        stage=lambda w: stage_config(w.experiment, int(w.stage)),
        validation_split=lambda w: validation_split(w.experiment),
        data=lambda w: data_args(w.experiment),
        init=lambda w: init_args(w.experiment, int(w.stage)),
        params_file=str(PARAMS),
        code=CODE["train"],
    log:
        "logs/train/{experiment}/stage{stage}.log",
    benchmark:
        "logs/benchmarks/train/{experiment}/stage{stage}.tsv"
    threads: lambda w: train_resources(w.experiment, int(w.stage))["cpus"]
    priority: lambda w: priority(w.experiment)
    resources:
        gpu=lambda w: train_resources(w.experiment, int(w.stage))["gpu"],
        mem_mb=lambda w: train_resources(w.experiment, int(w.stage))["mem_mb"],
        runtime=lambda w: train_resources(w.experiment, int(w.stage))["runtime"],
    shell:
        "(echo \"job ${{SLURM_JOB_ID:-local}} on $(hostname), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}\";"
        " poselift train --experiment {wildcards.experiment} --stage {wildcards.stage} --params {params.params_file}"
        " {params.data} {params.init} --out results/{wildcards.experiment}/stage{wildcards.stage}"
        " --device {DEVICE} --threads {threads} --processes {resources.gpu} --keep-state .snakemake/poselift-state/{wildcards.experiment}/stage{wildcards.stage})"
        " > {log} 2>&1"


rule evaluate:
    """An experiment's last stage on the test split (`poselift evaluate`): metrics.json and the rest."""
    wildcard_constraints:
        experiment=LIFTING_EXPERIMENTS,
    input:
        unpack(lambda w: experiment_inputs(w.experiment)),
        checkpoint=lambda w: last_checkpoint(w.experiment),
    output:
        metrics="results/{experiment}/evaluation/metrics.json",
        per_action="results/{experiment}/evaluation/per_action.csv",
        per_group="results/{experiment}/evaluation/per_group.json",
        predictions="results/{experiment}/evaluation/predictions.npz",
        targets="results/{experiment}/evaluation/targets.npz",
        actions="results/{experiment}/evaluation/actions.json",
        sequences="results/{experiment}/evaluation/sequences.json",
        views="results/{experiment}/evaluation/views.json",
    params:
        stage=lambda w: stage_config(w.experiment, num_stages(w.experiment)),
        data=lambda w: data_args(w.experiment),
        params_file=str(PARAMS),
        code=CODE["evaluate"],
    log:
        "logs/evaluate/{experiment}.log",
    benchmark:
        "logs/benchmarks/evaluate/{experiment}.tsv"
    threads: lambda w: evaluate_resources(w.experiment)["cpus"]
    priority: lambda w: priority(w.experiment)
    resources:
        gpu=lambda w: evaluate_resources(w.experiment)["gpu"],
        mem_mb=lambda w: evaluate_resources(w.experiment)["mem_mb"],
        runtime=lambda w: evaluate_resources(w.experiment)["runtime"],
    shell:
        "(echo \"job ${{SLURM_JOB_ID:-local}} on $(hostname), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}\";"
        " poselift evaluate --experiment {wildcards.experiment} --params {params.params_file} {params.data}"
        " --checkpoint {input.checkpoint} --out results/{wildcards.experiment}/evaluation"
        " --device {DEVICE} --threads {threads}) > {log} 2>&1"



rule evaluate_detector:
    """A 2D detector's last stage on the test split's crops (`poselift evaluate`, task heatmaps): COCO OKS
    AP/AR, PCK@0.05 and pixel errors in metrics.json, the keypoints in predictions.npz."""
    wildcard_constraints:
        experiment=DETECTOR_EXPERIMENTS,
    input:
        unpack(lambda w: experiment_inputs(w.experiment)),
        checkpoint=lambda w: last_checkpoint(w.experiment),
    output:
        metrics="results/{experiment}/evaluation/metrics.json",
        predictions="results/{experiment}/evaluation/predictions.npz",
    params:
        stage=lambda w: stage_config(w.experiment, num_stages(w.experiment)),
        data=lambda w: data_args(w.experiment),
        params_file=str(PARAMS),
        code=CODE["evaluate"],
    log:
        "logs/evaluate/{experiment}.log",
    benchmark:
        "logs/benchmarks/evaluate/{experiment}.tsv"
    threads: lambda w: evaluate_resources(w.experiment)["cpus"]
    priority: lambda w: priority(w.experiment)
    resources:
        gpu=lambda w: evaluate_resources(w.experiment)["gpu"],
        mem_mb=lambda w: evaluate_resources(w.experiment)["mem_mb"],
        runtime=lambda w: evaluate_resources(w.experiment)["runtime"],
    shell:
        "(echo \"job ${{SLURM_JOB_ID:-local}} on $(hostname), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}\";"
        " poselift evaluate --experiment {wildcards.experiment} --params {params.params_file} {params.data}"
        " --checkpoint {input.checkpoint} --out results/{wildcards.experiment}/evaluation"
        " --device {DEVICE} --threads {threads}) > {log} 2>&1"

localrules:
    baseline,


rule baseline:
    """The training-mean pose of a dataset scored on its test split (`poselift baseline mean-pose`): the row
    every results table carries, the error of a model that ignores its input. Seconds of one core and no
    GPU: it runs beside Snakemake, also under the Slurm profile."""
    input:
        prepared="data/prepared/{dataset}.h5",
    output:
        metrics="results/mean-pose@{dataset}/evaluation/metrics.json",
        per_action="results/mean-pose@{dataset}/evaluation/per_action.csv",
        per_group="results/mean-pose@{dataset}/evaluation/per_group.json",
        predictions="results/mean-pose@{dataset}/evaluation/predictions.npz",
        targets="results/mean-pose@{dataset}/evaluation/targets.npz",
        actions="results/mean-pose@{dataset}/evaluation/actions.json",
        sequences="results/mean-pose@{dataset}/evaluation/sequences.json",
        views="results/mean-pose@{dataset}/evaluation/views.json",
    params:
        code=CODE["baseline"],
    log:
        "logs/baseline/{dataset}.log",
    benchmark:
        "logs/benchmarks/baseline/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "poselift baseline mean-pose --prepared {input.prepared} --out-dir results/mean-pose@{wildcards.dataset}/evaluation"
        " > {log} 2>&1"
