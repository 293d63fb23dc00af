"""Every benchmark in sequence (heavy ones one at a time), then one summary: `make bench`.

    python -m bench.run_all [--scoring-firms 10000] [--naive-firms 1000]
                            [--scale-firms 25000 100000] [--profile-firms N ...]
                            [--only scoring_stage attributions nightly_scale naive_pipeline]
                            [--work /tmp/bench-smescore] [--registry REG]

Each benchmark runs as its own process (`python -m bench.<name> ...`, so one that fails or runs out
of memory does not take the others down, and each starts with a cold process as a nightly run
would); their output streams through and is kept in <work>/logs/run_all-<name>.log. The model is
trained once (under --work, keyed by the feature catalogue) and shared; generated feeds and feature
tables are reused between runs when their parameters match.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench._common import DEFAULT_WORK, child_env, ensure_model, repo_root

BENCHMARKS = ("scoring_stage", "attributions", "nightly_scale", "naive_pipeline")


def stream(cmd: list[str], log_path: str) -> int:
    """Run cmd, echoing its output and keeping it in log_path; its exit code."""
    print(f"\n$ {' '.join(cmd)}", flush=True)
    with open(log_path, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=child_env(), cwd=repo_root())
        for line in proc.stdout:
            if _noise(line):
                fh.write(line)
                continue
            sys.stdout.write(line)
            sys.stdout.flush()
            fh.write(line)
        return proc.wait()


def _noise(line: str) -> bool:
    """TensorFlow start-up chatter and per-5-s progress lines: kept in the log, not echoed."""
    return line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages", "To enable the following",
                            "[progress]", "WARNING:root:Resource module"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=DEFAULT_WORK)
    parser.add_argument("--registry", default=None, help="score with this registry's champion")
    parser.add_argument("--train-firms", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--scoring-firms", type=int, default=10_000)
    parser.add_argument("--scoring-repeats", type=int, default=3)
    parser.add_argument("--naive-firms", type=int, default=1_000)
    parser.add_argument("--scale-firms", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--scale-max-wall-s", type=float, default=None,
                        help="nightly_scale: skip a size projected to take longer than this")
    parser.add_argument("--profile-firms", type=int, nargs="*", default=[],
                        help="nightly_scale: also profile these sizes under cProfile")
    parser.add_argument("--attributions-args", default="",
                        help="extra arguments for bench.bench_attributions, e.g. '--rows 500'")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args(argv)

    logs, results_dir = (os.path.join(args.work, d) for d in ("logs", "results"))
    os.makedirs(logs, exist_ok=True)
    os.makedirs(results_dir, exist_ok=True)
    if set(args.only) - {"attributions"}:
        registry, version = ensure_model(args.work, args.registry, args.train_firms)
        print(f"model {version} in {registry}")
    common = ["--work", args.work, "--months", str(args.months), "--train-firms", str(args.train_firms),
              *(["--registry", args.registry] if args.registry else [])]
    py = [sys.executable, "-m"]
    commands = {
        "scoring_stage": [*py, "bench.scoring_stage", *common, "--firms", str(args.scoring_firms),
                          "--repeats", str(args.scoring_repeats)],
        "attributions": [*py, "bench.bench_attributions", *args.attributions_args.split()],
        "nightly_scale": [*py, "bench.nightly_scale", *common, "--firms", *map(str, args.scale_firms),
                          *(["--profile-firms", *map(str, args.profile_firms)] if args.profile_firms else []),
                          *(["--max-wall-s", str(args.scale_max_wall_s)] if args.scale_max_wall_s else [])],
        "naive_pipeline": [*py, "bench.naive_pipeline", *common, "--firms", str(args.naive_firms)],
    }
    status = {}
    for name in BENCHMARKS:
        if name not in args.only:
            continue
        cmd = commands[name]
        result_json = os.path.join(results_dir, f"{name}.json")
        if name != "attributions":
            cmd = [*cmd, "--json", result_json]
            if os.path.exists(result_json):
                os.remove(result_json)
        start = time.perf_counter()
        rc = stream(cmd, os.path.join(logs, f"run_all-{name}.log"))
        status[name] = (rc, time.perf_counter() - start)
    summary(status, results_dir)
    return 0 if all(rc == 0 for rc, _ in status.values()) else 1


def summary(status: dict, results_dir: str) -> None:
    def load(name):
        if name not in status:      # not run this time: an older result file is not this run's
            return None
        try:
            with open(os.path.join(results_dir, f"{name}.json"), encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    print("\n=== summary ===")
    for name, (rc, secs) in status.items():
        print(f"{name:<16} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {secs:7.0f}s")
    r = load("scoring_stage")
    for b in (r or {}).get("by_batch_rows", []):
        print(f"scoring stage, {r['model_rows']:,} firms, tables of {b['batch_rows']}: Beam "
              f"{b['beam_rows_per_s']:,.0f} rows/s, in-process {b['in_process_rows_per_s']:,.0f} rows/s, "
              f"ratio {b['ratio']:.2f} (goal >= 0.6)")
    r = load("nightly_scale")
    for s in (r or {}).get("sizes", []):
        if s["returncode"] == 0:
            print(f"nightly {s['firms']:,} firms: {s['wall_s']:.0f}s, peak RSS "
                  f"{s['peak_rss_bytes'] / 2**30:.2f} GiB")
        else:
            print(f"nightly {s['firms']:,} firms: FAILED (exit {s['returncode']})")
    if r and "time_ratio" in r:
        print(f"nightly time ratio largest/smallest: {r['time_ratio']:.2f}")
    r = load("naive_pipeline")
    if r:
        print(f"naive vs batched, {r['model_rows']:,} firms: {r['ratio_naive_over_batched']:.1f}x slower; "
              f"max |Δpd| {r['outputs'].get('max_abs_dpd', float('nan')):.1e}, "
              f"max |Δphi| {r['outputs'].get('max_abs_dphi', float('nan')):.1e}")


if __name__ == "__main__":
    sys.exit(main())
