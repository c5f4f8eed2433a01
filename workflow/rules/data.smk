# Data: prepare (per dataset) -> render (the datasets of params.yaml `render`) -> detect (per dataset x detector).
#
# Both rules are eligible for Snakemake's between-workflow output cache (`cache:`; the profiles turn it on
# with `cache: []`, i.e. --cache). The cache key hashes the shell command, the params and the content of
# the input files that no job makes, and chains the keys of the jobs that make the others. Wildcards are not
# part of it, so every value that decides the output is a param: the reader and its options, the detector
# and its settings, and the fingerprint of the poselift code that runs (CODE). A rule with `cache:` may not
# have `benchmark:`; their logs say how long they took.
#
# Both run beside Snakemake, also under the Slurm profile: Snakemake 9 consults the cache only for the jobs
# it runs itself (its local executor); as cluster jobs they would be recomputed every time. They need no
# GPU and take seconds to a few minutes of one core.

localrules:
    prepare,
    render,
    detect,


rule prepare:
    """A dataset in poselift's prepared layout (the reader and options of params.yaml datasets.<name>)."""
    input:
        lambda w: source_files(w.dataset),
    output:
        "data/prepared/{dataset}.h5",
    params:
        args=lambda w: prepare_args(w.dataset),
        code=CODE["prepare"],
    log:
        "logs/prepare/{dataset}.log",
    cache: "omit-software"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "poselift prepare {params.args} --out {output} > {log} 2>&1"


rule detect:
    """2D detections of a prepared dataset by one detector: computed by `poselift detect` (settings:
    params.yaml detectors.<name>), or imported by `poselift import-detections` from the file named in
    detectors.<name>.import.<dataset>. Network detectors: rule detect_images."""
    input:
        unpack(detect_inputs),
    output:
        "data/detections/{dataset}/{detector}.h5",
    params:
        command=lambda w: detect_command(w.dataset, w.detector),
        settings=lambda w: (config.get("detectors") or {}).get(w.detector),
        code=lambda w: CODE["import_detections" if imported_detections(w.dataset, w.detector) else "detect"],
    log:
        "logs/detect/{dataset}/{detector}.log",
    cache: "omit-software"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "{params.command} --out {output} > {log} 2>&1"


rule render:
    """People rendered from a prepared dataset's motion through its cameras (`poselift render`): labelled
    256x192 crops, with the settings of params.yaml render.<dataset>. The MakeHuman assets are checked against
    the manifest shipped with the code, so the code fingerprint covers them. With render.<dataset>.videos, the
    crops are cut from the dataset's real videos instead (`poselift crops videos`; the videos folder is named
    in the params, its files are not hashed)."""
    input:
        "data/prepared/{dataset}.h5",
    output:
        "data/renders/{dataset}.h5",
    params:
        command=lambda w, threads: render_command(w.dataset, threads),
        code=lambda w: CODE[render_code(w.dataset)],
    log:
        "logs/render/{dataset}.log",
    cache: "omit-software"
    priority: 1  # the image chain first (poselift.workflow.Workflow.priority)
    threads: 8  # worker processes, one sequence each (Snakemake lowers it to the cores it has); same bytes
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 500 * threads,
        runtime=240,
    shell:
        "{params.command} --prepared {input} --out {output} > {log} 2>&1"


ruleorder: detect_images > detect  # a network detector's file: detect_images (its wildcard matches only those)


rule detect_images:
    """2D detections of a prepared dataset by a network poselift trained (params.yaml detectors.<name>:
    network and experiment), run on the dataset's rendered crops: a GPU job on a cluster, like training."""
    wildcard_constraints:
        detector=NETWORK_DETECTORS,
    input:
        unpack(detect_inputs),
    output:
        "data/detections/{dataset}/{detector}.h5",
    params:
        command=lambda w: detect_command(w.dataset, w.detector),
        code=CODE["detect"],
    log:
        "logs/detect/{dataset}/{detector}.log",
    benchmark:
        "logs/benchmarks/detect/{dataset}/{detector}.tsv"
    priority: 1
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    shell:
        "{params.command} --out {output} > {log} 2>&1"


ruleorder: detect_images_features > detect_images
ruleorder: detect_images_features > detect


rule detect_images_features:
    """detect_images for a network detector whose image features an experiment reads (Lifting by Image, task
    image_lifting): the same pass also writes each crop's stride-4 feature map (`poselift detect --features`)."""
    wildcard_constraints:
        detector=FEATURE_DETECTORS,
    input:
        unpack(detect_inputs),
    output:
        detections="data/detections/{dataset}/{detector}.h5",
        features="data/features/{dataset}/{detector}.h5",
    params:
        command=lambda w: detect_command(w.dataset, w.detector),
        code=CODE["detect"],
    log:
        "logs/detect/{dataset}/{detector}.log",
    benchmark:
        "logs/benchmarks/detect/{dataset}/{detector}.tsv"
    priority: 1
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    shell:
        "{params.command} --out {output.detections} --features {output.features} > {log} 2>&1"
