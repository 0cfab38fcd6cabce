#!/usr/bin/env python3
"""Runs llama.cpp's llama-bench and `parity bench` on the same GGUF files in
one sitting, alternating per file, and prints the BENCHMARKS.md tables.

    python scripts/bench_vs_llamacpp.py --tree TREE [--parity target/release/parity] [--set K=V] FILE.gguf ...

TREE is a llama.cpp tree built by scripts/build_llamacpp.sh. Both engines get
2 threads, a 64-token prompt and 16 decode steps. llama-bench reports the mean
and standard deviation of its 5 runs; parity the best of --reps runs (its JSON
has every field; it is printed too). Nothing is written anywhere.
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
ap.add_argument("files", nargs="+")
a = ap.parse_args()

bench = pathlib.Path(a.tree) / "build" / "bin" / "llama-bench"
rows = []
for f in a.files:
    out = subprocess.run([str(bench), "-m", f, "-p", "64", "-n", "16", "-t", a.threads, "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    ll = {("pp" if r["n_prompt"] else "tg"): (r["avg_ts"], r["stddev_ts"]) for r in json.loads(out)}
    env = dict(os.environ, RAYON_NUM_THREADS=a.threads)
    sets = [x for kv in a.set for x in ("--set", kv)]
    p = json.loads(subprocess.run([a.parity, "bench", "--model", f, "-p", "64", "-n", "16", "--reps", a.reps, *sets],
                                  check=True, capture_output=True, text=True, env=env).stdout)
    print(json.dumps(p))
    rows.append((pathlib.Path(f).name, os.path.getsize(f), ll, p))

print()
print("| file | llama.cpp pp64 | parity pp64 | ratio | llama.cpp tg16 | parity tg16 | ratio | decode GB/s (share of triad) | peak RSS untraced / traced |")
print("|---|---|---|---|---|---|---|---|---|")
for name, size, ll, p in rows:
    (lpp, lpps), (ltg, ltgs) = ll["pp"], ll["tg"]
    print(f"| {name} ({size / 2**20:.0f} MiB) | {lpp:.1f} ± {lpps:.1f} | {p['pp_tok_s']:.1f} | {p['pp_tok_s'] / lpp:.2f} "
          f"| {ltg:.1f} ± {ltgs:.1f} | {p['tg_tok_s']:.1f} | {p['tg_tok_s'] / ltg:.2f} "
          f"| {p['tg_weight_gb_s']:.1f} ({p['tg_weight_gb_s'] / p['triad_gb_s']:.0%} of {p['triad_gb_s']:.0f}) "
          f"| {p['peak_rss_untraced_mib']:.0f} / {p['peak_rss_mib']:.0f} MiB |")
print()
print("| file | pp64 last-row logits | pp64 all-row logits | pp64 traced | traced / all-row | tg16 | tg16 traced | traced / untraced |")
print("|---|---|---|---|---|---|---|---|")
for name, _, _, p in rows:
    print(f"| {name} | {p['pp_tok_s']:.1f} | {p['pp_all_logits_tok_s']:.1f} | {p['pp_traced_tok_s']:.1f} "
          f"| {p['pp_all_logits_tok_s'] / p['pp_traced_tok_s']:.2f}x | {p['tg_tok_s']:.1f} | {p['tg_traced_tok_s']:.1f} "
          f"| {p['tg_tok_s'] / p['tg_traced_tok_s']:.2f}x |")
