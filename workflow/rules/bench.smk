# The longer `bench` target: params.yaml bench.experiments, each run bench.seeds times (<name>, <name>-seed1,
# ...), evaluated, and their report in reports/bench/: runs aggregated over seeds (mean +- std), the ablation
# table (bench.ablations) and the attention paper's Table V (bench.detector_table). It builds `all` too.
#
#   snakemake --profile workflow/profiles/local bench     here (CPU sizes: within 2 hours on 2 cores)
#   snakemake --profile slurm bench                       on a cluster: one GPU job per stage

localrules:
    bench_report,


rule bench:
    """The bench runs, evaluated, and their report (reports/bench/)."""
    input:
        REPORT.values(),
        "reports/bench/bench.md",


rule bench_report:
    """`poselift report --bench`: every run of `all` and `bench` (seeds aggregated), the ablation table and
    the detector table."""
    input:
        bench_metrics(),
    output:
        table="reports/bench/bench.md",
        html=report("reports/bench/bench.html", caption="../report/bench.rst", category="Bench"),
        plot=report("reports/bench/bench_ablations.png", caption="../report/bench.rst", category="Bench"),
    params:
        experiments=lambda w: " ".join(f"--experiment {name}" for name in bench_report_names()),
        params_file=str(PARAMS),
        code=CODE["report"],
    log:
        "logs/bench_report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "poselift report --results results {params.experiments} --bench {params.params_file} --out reports/bench"
        " > {log} 2>&1"
