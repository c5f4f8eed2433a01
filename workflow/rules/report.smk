# The results page of every experiment (`poselift report`), also shown by
# `snakemake --report reports/report.html`. A few seconds of CPU: it runs where Snakemake runs, never as a
# cluster job.

localrules:
    report,


rule report:
    """The tables (Markdown, CSV, HTML) of every experiment's evaluation, mean ± std over seeded runs, and the
    figures a researcher reads: training curves, error per joint group, MPJPE per action, test frames in 3D,
    and Lifting by Image's attention pictures.
    results.html is one page with the tables and every figure embedded."""
    input:
        all_metrics(),
        all_renders(),
    output:
        table=REPORT["table"],
        csv=REPORT["csv"],
        metrics=REPORT["metrics"],
        html=report(REPORT["html"], caption="../report/results.rst", category="Results"),
        plot=report(REPORT["plot"], caption="../report/per_action.rst", category="Results"),
        training=report("reports/training.png", caption="../report/training.rst", category="Results"),
        groups=report("reports/per_group.png", caption="../report/per_group.rst", category="Results"),
        frames=report("reports/skeletons.png", caption="../report/skeletons.rst", category="Results"),
        sheets=report(report_sheets(), caption="../report/crops.rst", category="Rendered benchmark"),
        attention=report(report_attention(), caption="../report/attention.rst", category="Results"),
    params:
        experiments=lambda w: " ".join(f"--experiment {name}" for name in report_names()),
        crops=report_crops_args(),
        code=CODE["report"],
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "poselift report --results results {params.experiments} {params.crops} --out reports > {log} 2>&1"
