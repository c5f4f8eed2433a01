"""``poselift report --results results --out reports [--bench params.yaml]``: every experiment's evaluation in
one place.

Reads ``<results>/<experiment>/evaluation/metrics.json`` of each ``--experiment`` (default: every one found)
and writes into --out: ``results.md``, ``results.csv`` (one row per run; runs ``<name>-seed<k>`` also as mean ±
std over seeds), ``metrics.json`` (the headline numbers, for ``dvc metrics``), the figures ``training.png``
(loss and validation metric per epoch of each stage), ``per_group.png`` (error per joint group),
``per_action.png`` (MPJPE per action) and ``skeletons.png`` (test frames, predicted and ground-truth 3D), and
``results.html``, one page with the tables and every figure embedded. With ``--crops FILE`` (a labelled-crops
file, e.g. the rendered benchmark) also ``crops-<name>.png``, a contact sheet of its crops with their 2D
skeletons drawn on them (shown at the end of results.html). With ``--bench params.yaml`` also ``bench.md``,
``bench.html`` and ``bench_ablations.png``: the ablation table and the 2D-detector table (attention paper,
Table V) of params.yaml's ``bench`` section, over seeds.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("report", help="collect every experiment's evaluation into tables and plots")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="folder of <experiment>/evaluation/metrics.json (default results)")
    p.add_argument("--experiment", action="append", default=[], metavar="NAME",
                   help="an experiment to include, in this order (repeatable; default: every one found)")
    p.add_argument("--crops", action="append", default=[], type=Path, metavar="FILE",
                   help="a labelled-crops file (poselift render): its contact sheet as crops-<file name>.png")
    p.add_argument("--bench", type=Path, metavar="PARAMS.yaml",
                   help="also bench.md, bench.html, bench_ablations.png: the ablation and 2D-detector tables of "
                        "the file's bench section, mean ± std over seeds (runs <name>-seed<k>)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder to write into (default reports)")
    p.set_defaults(run=run)


def run(args) -> int:
    import cv2

    from poselift.report import collect, contact_sheet, read_bench, write_bench, write_report

    if args.bench:
        read_bench(args.bench)  # a bad bench section stops the command before anything is written
    results = collect(args.results, args.experiment or None)
    sheets = {}
    for path in args.crops:
        ok, data = cv2.imencode(".png", contact_sheet(path)[..., ::-1])
        sheets[path.stem] = data.tobytes()
    written = write_report(results, args.out, sheets)
    for name, png in sheets.items():
        from poselift.io import atomic_output

        with atomic_output(args.out / f"crops-{name}.png") as tmp:
            tmp.write_bytes(png)
        written[f"crops-{name}.png"] = args.out / f"crops-{name}.png"
    if args.bench:
        written.update(write_bench(args.results, args.bench, args.out))
    print(f"wrote {', '.join(str(p) for p in written.values())}: {len(results)} experiment"
          f"{'s' if len(results) != 1 else ''}")
    return 0
