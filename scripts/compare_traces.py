#!/usr/bin/env python3
"""Compare two parity-trace/1 directories stage by stage with numpy.

    python scripts/compare_traces.py SUBJECT REFERENCE [--markdown] [--nmse-flag 1e-9]

For every stage both traces hold (rows intersected when a stage has `rows`),
prints the minimum per-row cosine, the maximum per-row NMSE
(||a-b||^2 / ||b||^2, b = REFERENCE), both in float64, and the first row whose
NMSE exceeds --nmse-flag. Integer stages (expert_ids) are compared as id sets
per row; expert_weights weight-by-id (SPEC §1). bf16 stages (stored as <u2
bit patterns) are widened to f32. Exit status 0 always (this is a report).
"""
import argparse
import pathlib
import sys

import numpy as np
import yaml


def load(trace):
    m = yaml.safe_load(pathlib.Path(trace, "trace.yaml").read_text())
    return m, m.get("stages", {})


def array(trace, entry):
    a = np.load(pathlib.Path(trace, entry["file"]))
    if entry.get("dtype") == "bf16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a


def rows_of(entry, total):
    r = entry.get("rows")
    return (r[0], r[1]) if r else (0, total)


def stage_key(name):
    order = ["attn_norm", "q", "k", "v", "q_norm", "k_norm", "q_rope", "k_rope", "attn", "attn_post_norm", "attn_out",
             "attn_resid", "ffn_norm", "router_logits", "expert_ids", "expert_weights", "ffn_out", "out"]
    if name == "embed":
        return (0, 0, 0)
    if name in ("final_norm", "logits"):
        return (2, 0 if name == "final_norm" else 1, 0)
    layer, st = name[1:].split(".", 1)
    return (1, int(layer), order.index(st) if st in order else 99)


def compare(subject, reference, nmse_flag=1e-9):
    ms, ss = load(subject)
    mr, sr = load(reference)
    ts, tr = len(ms["tokens"]), len(mr["tokens"])
    if ms["tokens"] != mr["tokens"]:
        raise SystemExit("the traces were made on different tokens")
    results = []
    for name in sorted(set(ss) & set(sr), key=stage_key):
        a, b = array(subject, ss[name]), array(reference, sr[name])
        (a0, a1), (b0, b1) = rows_of(ss[name], ts), rows_of(sr[name], tr)
        lo, hi = max(a0, b0), min(a1, b1)
        if hi <= lo:
            results.append({"stage": name, "note": "no common rows"})
            continue
        a, b = a[lo - a0:hi - a0], b[lo - b0:hi - b0]
        if a.shape != b.shape:
            results.append({"stage": name, "note": f"shape {list(a.shape)} vs {list(b.shape)}"})
            continue
        if name.endswith("expert_ids"):
            same = [set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b)]
            bad = [lo + i for i, s in enumerate(same) if not s]
            results.append({"stage": name, "rows": (lo, hi), "id_sets_equal": f"{sum(same)}/{len(same)}",
                            "first_bad_row": bad[0] if bad else None})
            continue
        if name.endswith("expert_weights") and name.replace("weights", "ids") in ss and name.replace("weights", "ids") in sr:
            ia = array(subject, ss[name.replace("weights", "ids")])[lo - a0:hi - a0]
            ib = array(reference, sr[name.replace("weights", "ids")])[lo - b0:hi - b0]
            # weight-by-id: reorder the subject's weights to the reference's ids (rows with equal id sets)
            a = a.copy()
            for r in range(len(a)):
                if set(ia[r].tolist()) == set(ib[r].tolist()):
                    pos = {int(e): j for j, e in enumerate(ia[r])}
                    a[r] = a[r][[pos[int(e)] for e in ib[r]]]
        x = a.reshape(len(a), -1).astype(np.float64)
        y = b.reshape(len(b), -1).astype(np.float64)
        dot = (x * y).sum(1)
        nx, ny = np.sqrt((x * x).sum(1)), np.sqrt((y * y).sum(1))
        cos = np.where((nx > 0) & (ny > 0), dot / np.maximum(nx * ny, 1e-300), np.where((nx == 0) & (ny == 0), 1.0, 0.0))
        nmse = ((x - y) ** 2).sum(1) / np.maximum((y * y).sum(1), 1e-300)
        over = np.nonzero(nmse > nmse_flag)[0]
        results.append({"stage": name, "rows": (lo, hi), "min_cos": float(cos.min()), "max_nmse": float(nmse.max()),
                        "worst_row": lo + int(nmse.argmax()), "first_bad_row": lo + int(over[0]) if len(over) else None,
                        "max_abs": float(np.abs(x - y).max())})
    only = sorted(set(ss) ^ set(sr), key=lambda n: (n not in ss, n))
    return results, [(n, "subject" if n in ss else "reference") for n in only]


def grid(pairs, nmse_flag):
    """Markdown: one row per stage, one column per (subject, reference) pair,
    each cell `min cosine / max NMSE` (ids: equal id sets per row)."""
    cols, table, order = [], {}, []
    for subject, reference in pairs:
        col = pathlib.Path(subject).resolve().parent.name
        cols.append(col)
        res, _ = compare(subject, reference, nmse_flag)
        for r in res:
            if r["stage"] not in order:
                order.append(r["stage"])
            if "note" in r:
                cell = r["note"]
            elif "id_sets_equal" in r:
                cell = f"ids {r['id_sets_equal']}"
            else:
                cell = f"{r['min_cos']:.6f} / {r['max_nmse']:.1e}"
                if r["first_bad_row"] is not None:
                    cell = f"**{cell}** (row {r['first_bad_row']})"
            table[(r["stage"], col)] = cell
    order.sort(key=stage_key)
    print("| stage | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for st in order:
        print(f"| {st} | " + " | ".join(table.get((st, c), "-") for c in cols) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("subject")
    ap.add_argument("reference")
    ap.add_argument("more", nargs="*", help="with --grid: further SUBJECT REFERENCE pairs")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--grid", action="store_true", help="markdown grid of several pairs: stage x pair (column = subject's parent dir)")
    ap.add_argument("--nmse-flag", type=float, default=1e-9, help="NMSE above which a row counts as disagreeing")
    args = ap.parse_args()
    if args.grid:
        flat = [args.subject, args.reference, *args.more]
        if len(flat) % 2:
            ap.error("--grid takes SUBJECT REFERENCE pairs")
        return grid(list(zip(flat[::2], flat[1::2])), args.nmse_flag)
    if args.more:
        ap.error("extra arguments need --grid")
    res, only = compare(args.subject, args.reference, args.nmse_flag)
    if args.markdown:
        print("| stage | min cosine | max NMSE | first row over flag |")
        print("|---|---|---|---|")
    else:
        print(f"{'stage':<22} {'min cosine':>14} {'max NMSE':>11} {'max |diff|':>11}  first row NMSE>{args.nmse_flag:g}")
    for r in res:
        if "note" in r:
            line = (r["stage"], r["note"], "", "")
        elif "id_sets_equal" in r:
            line = (r["stage"], f"id sets {r['id_sets_equal']}", "", "" if r["first_bad_row"] is None else str(r["first_bad_row"]))
        else:
            line = (r["stage"], f"{r['min_cos']:.9f}", f"{r['max_nmse']:.2e}",
                    "-" if r["first_bad_row"] is None else str(r["first_bad_row"]))
        if args.markdown:
            print("| " + " | ".join(line) + " |")
        elif "min_cos" in r:
            print(f"{line[0]:<22} {line[1]:>14} {line[2]:>11} {r['max_abs']:>11.2e}  {line[3]}")
        else:
            print(f"{line[0]:<22} {line[1]:>14} {'':>11} {'':>11}  {line[3]}")
    for n, side in only:
        print(f"(only in {side}: {n})", file=sys.stderr)


if __name__ == "__main__":
    main()
