"""``poselift report --results results --out reports``: every experiment's evaluation in one table.

Reads ``<results>/<experiment>/evaluation/metrics.json`` of each ``--experiment`` (default: every one found)
and writes into --out: ``results.md``, ``results.csv``, ``results.html`` (one row per experiment),
``metrics.json`` (the headline numbers, for ``dvc metrics``) and ``per_action.png`` (MPJPE per action);
with ``--crops FILE`` (a labelled-crops file, e.g. the rendered benchmark) also ``crops-<name>.png``, a
contact sheet of its crops with their 2D skeletons drawn on them.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("report", help="collect every experiment's evaluation into one table and plot")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="folder of <experiment>/evaluation/metrics.json (default results)")
    p.add_argument("--experiment", action="append", default=[], metavar="NAME",
                   help="an experiment to include, in this order (repeatable; default: every one found)")
    p.add_argument("--crops", action="append", default=[], type=Path, metavar="FILE",
                   help="a labelled-crops file (poselift render): its contact sheet as crops-<file name>.png")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder to write into (default reports)")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.report import collect, write_report

    from poselift.report import write_contact_sheet

    results = collect(args.results, args.experiment or None)
    written = write_report(results, args.out)
    for path in args.crops:
        written[path.name] = write_contact_sheet(path, args.out / f"crops-{path.stem}.png")
    print(f"wrote {', '.join(str(p) for p in written.values())}: {len(results)} experiment"
          f"{'s' if len(results) != 1 else ''}")
    return 0
