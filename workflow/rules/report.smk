# The results table and plots of every experiment (`poselift report`), also shown by
# `snakemake --report reports/report.html`. A few seconds of CPU: it runs where Snakemake runs, never as a
# cluster job.

localrules:
    report,


rule report:
    """One table (Markdown, CSV, HTML) and one per-action MPJPE plot of every experiment's evaluation."""
    input:
        all_metrics(),
        all_renders(),
    output:
        table=REPORT["table"],
        csv=REPORT["csv"],
        metrics=REPORT["metrics"],
        html=report(REPORT["html"], caption="../report/results.rst", category="Results"),
        plot=report(REPORT["plot"], caption="../report/per_action.rst", category="Results"),
        sheets=report(report_sheets(), caption="../report/crops.rst", category="Rendered benchmark"),
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
