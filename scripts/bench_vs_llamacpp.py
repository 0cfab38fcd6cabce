#!/usr/bin/env python3
"""Runs llama.cpp's llama-bench and `parity bench` on the same GGUF files in
one sitting, alternating per file, and prints the BENCHMARKS.md tables.

    python scripts/bench_vs_llamacpp.py --tree TREE [--parity target/release/parity] [--set K=V] FILE.gguf ...

TREE is a llama.cpp tree built by scripts/build_llamacpp.sh. Both engines get
2 threads, a 64-token prompt and 16 decode steps. llama-bench reports the mean
and standard deviation of its 5 runs; parity the best of --reps runs (its JSON
has every field; it is printed too). Nothing is written anywhere.

With --rounds N the whole file list is run N times, llama-bench and parity
side by side for each file in each round, so a drift of the machine lands on
both; the tables then give each side's median over rounds and the median and
range of the per-round (paired) ratios.
"""
import argparse
import json
import os
import pathlib
import subprocess

ap = argparse.ArgumentParser()
ap.add_argument("--tree", required=True)
ap.add_argument("--parity", default="target/release/parity")
ap.add_argument("--reps", default="3")
ap.add_argument("--threads", default="2")
ap.add_argument("--set", action="append", default=[], help="passed to parity bench (e.g. activation_rounding=llamacpp)")
ap.add_argument("--rounds", type=int, default=1, help="run every file this many times, alternating the engines")
ap.add_argument("files", nargs="+")
a = ap.parse_args()

bench = pathlib.Path(a.tree) / "build" / "bin" / "llama-bench"


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


runs = {f: [] for f in a.files}  # file -> [(llama-bench {pp, tg}, parity JSON)] per round
for _ in range(max(a.rounds, 1)):
    for f in a.files:
        out = subprocess.run([str(bench), "-m", f, "-p", "64", "-n", "16", "-t", a.threads, "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        ll = {("pp" if r["n_prompt"] else "tg"): (r["avg_ts"], r["stddev_ts"]) for r in json.loads(out)}
        env = dict(os.environ, RAYON_NUM_THREADS=a.threads)
        sets = [x for kv in a.set for x in ("--set", kv)]
        p = json.loads(subprocess.run([a.parity, "bench", "--model", f, "-p", "64", "-n", "16", "--reps", a.reps, *sets],
                                      check=True, capture_output=True, text=True, env=env).stdout)
        print(json.dumps(p))
        runs[f].append((ll, p))

rows = []
for f, rs in runs.items():
    if len(rs) == 1:
        rows.append((pathlib.Path(f).name, os.path.getsize(f), rs[0][0], rs[0][1]))
        continue
    # Medians over rounds; the llama-bench "± sd" becomes the range over rounds.
    ll = {k: (median([r[0][k][0] for r in rs]), None, [r[0][k][0] for r in rs]) for k in ("pp", "tg")}
    p = {k: median([r[1][k] for r in rs]) if isinstance(rs[0][1][k], (int, float)) else rs[0][1][k] for k in rs[0][1]}
    p["paired"] = {k: [r[1][f"{k}_tok_s"] / r[0][k][0] for r in rs] for k in ("pp", "tg")}
    rows.append((pathlib.Path(f).name, os.path.getsize(f), ll, p))


def ll_cell(v):
    if v[1] is not None:
        return f"{v[0]:.1f} ± {v[1]:.1f}"
    return f"{v[0]:.1f} ({min(v[2]):.0f}-{max(v[2]):.0f})"


def ratio_cell(p, k, lmean):
    if "paired" not in p:
        return f"{p[f'{k}_tok_s'] / lmean:.2f}"
    r = p["paired"][k]
    return f"{median(r):.2f} ({min(r):.2f}-{max(r):.2f})"


print()
if a.rounds > 1:
    print(f"({a.rounds} rounds: medians, and in brackets the range over rounds; ratios paired round by round)")
    print()
print("| file | llama.cpp pp64 | parity pp64 | ratio | llama.cpp tg16 | parity tg16 | ratio | decode GB/s (share of triad) | peak RSS untraced / traced |")
print("|---|---|---|---|---|---|---|---|---|")
for name, size, ll, p in rows:
    print(f"| {name} ({size / 2**20:.0f} MiB) | {ll_cell(ll['pp'])} | {p['pp_tok_s']:.1f} | {ratio_cell(p, 'pp', ll['pp'][0])} "
          f"| {ll_cell(ll['tg'])} | {p['tg_tok_s']:.1f} | {ratio_cell(p, 'tg', ll['tg'][0])} "
          f"| {p['tg_weight_gb_s']:.1f} ({p['tg_weight_gb_s'] / p['triad_gb_s']:.0%} of {p['triad_gb_s']:.0f}) "
          f"| {p['peak_rss_untraced_mib']:.0f} / {p['peak_rss_mib']:.0f} MiB |")
print()
print("| file | pp64 last-row logits | pp64 all-row logits | pp64 traced | traced / all-row | tg16 | tg16 traced | traced / untraced |")
print("|---|---|---|---|---|---|---|---|")
for name, _, _, p in rows:
    print(f"| {name} | {p['pp_tok_s']:.1f} | {p['pp_all_logits_tok_s']:.1f} | {p['pp_traced_tok_s']:.1f} "
          f"| {p['pp_all_logits_tok_s'] / p['pp_traced_tok_s']:.2f}x | {p['tg_tok_s']:.1f} | {p['tg_traced_tok_s']:.1f} "
          f"| {p['tg_tok_s'] / p['tg_traced_tok_s']:.2f}x |")
