"""``poselift info FILE.h5 [--json]``: what a prepared dataset holds."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("info", help="summarise a prepared dataset (subjects, actions, frames, cameras, splits)")
    p.add_argument("file", help="prepared-dataset HDF5 file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.data.prepared import load_prepared

    summary = load_prepared(args.file).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.file}: {summary['dataset']} ({summary['protocol'] or 'no protocol'}), {summary['fps']:g} fps, "
          f"{summary['joints']} joints")
    print(f"  {summary['sequences']} sequences, {summary['frames']} frames, {summary['views']} camera views")
    print(f"  subjects: {', '.join(summary['subjects'])}")
    print(f"  actions ({len(summary['actions'])}): {', '.join(summary['actions'])}")
    for rig, cams in summary["cameras"].items():
        print(f"  cameras [{rig}]: {', '.join(cams)}")
    for split, s in summary["splits"].items():
        print(f"  {split:<10} {s['sequences']:>6} sequences {s['frames']:>9} frames  subjects {', '.join(s['subjects'])}")
    return 0
