"""The whole nightly run at portfolio scale: `smescore score` as a subprocess under /usr/bin/time -v.

    python -m bench.nightly_scale [--firms 25000 100000] [--months 24] [--profile-firms N ...]

For each size: generated feeds of N firms x --months months (made once, reused), then one
`smescore score --feeds ... --as-of 2026-10-31 --registry REG --warehouse <fresh>.duckdb` run.
Figures per size: wall time and peak RSS from /usr/bin/time -v; the timeline of the run (its
progress lines, time-stamped as they arrive, with the process's RSS sampled every --sample-s)
gives when each stage was seen and the RSS at the time; and the run's own result (firms scored by
the model / rules, rejected records). Across sizes: the time ratio of the largest to the smallest
size against the firm ratio (goals at 100k: <= 10 min, <= 4 GiB, 4x firms in <= 4.4x time).

The model: `smescore train` needs >= 5 labelled month-end snapshots, which a 24-month portfolio
cannot give (it has one), so one model is trained on a --train-firms x 36-month portfolio of the
same generator (not timed) and scores every size; the model's size does not depend on the book it
was trained on, so the scoring cost is the same.

--profile-firms N: one more run at N firms under cProfile (slower; not the timed figure), printing
the cumulative time of the job's stages: reading/validation, sharding, point-in-time features,
inference (+attributions), score rows, staging sinks, publication into DuckDB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
import time

from bench import _common  # noqa: F401  (sets the TF environment first)
from bench._common import (CLI, add_common_args, child_env, ensure_feeds, ensure_model, log,
                           repo_root, write_json)

GIB = 1024 ** 3


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def _rss_bytes(pids) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def parse_time_v(text: str) -> dict:
    """Wall seconds, peak RSS and CPU seconds from GNU time -v's report."""
    out = {}
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    if m:
        out["wall_s"] = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_rss_bytes"] = int(m.group(1)) * 1024
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    if user and system:
        out["cpu_s"] = float(user.group(1)) + float(system.group(1))
    m = re.search(r"Exit status: (\d+)", text)
    if m:
        out["exit_status"] = int(m.group(1))
    return out


STAGES = (  # (name, pattern in a progress line) — first time each is seen
    ("reading feeds", re.compile(r"rows read\[")),
    ("features: first shard done", re.compile(r"firms featurized")),
    ("inference: first batch scored", re.compile(r"firms scored\[model\]")),
    ("run started (driver)", re.compile(r"\[score\] run ")),
    ("pipeline finished (publication starts)", re.compile(r"\[score\] pipeline finished")),
    ("published", re.compile(r"\[score\] published")),
)


def timed_score(feeds: str, registry: str, as_of: str, warehouse: str, log_path: str,
                sample_s: float, extra: list[str], prefix: list[str] | None = None,
                env: dict | None = None) -> dict:
    """Run `smescore score` under /usr/bin/time -v; figures, timeline and the job's result."""
    for path in (warehouse, warehouse + ".wal"):
        if os.path.exists(path):
            os.remove(path)
    cmd = ["/usr/bin/time", "-v", *(prefix or CLI), "score", "--feeds", feeds, "--as-of", as_of,
           "--registry", registry, "--warehouse", warehouse, *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**child_env(), **(env or {})}, cwd=repo_root())
    samples, lines, stop = [], [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter() - start, _rss_bytes(_descendants(proc.pid))))
            stop.wait(sample_s)

    def read_stderr():
        for line in proc.stderr:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in threads:
        t.start()
    stdout = proc.stdout.read()
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    wall_here = time.perf_counter() - start
    with open(log_path, "w", encoding="utf-8") as fh:
        for t, line in lines:
            fh.write(f"{t:8.1f}s  {line}\n")
        fh.write("\n--- stdout ---\n" + stdout)
        fh.write("\n--- rss samples (s, MiB) ---\n")
        fh.writelines(f"{t:.1f} {r / 2**20:.0f}\n" for t, r in samples)
    report = parse_time_v("\n".join(line for _, line in lines))
    rss_at = lambda t: max((r for s, r in samples if s <= t), default=0)  # noqa: E731
    stages = []
    for name, pattern in STAGES:
        hit = next((t for t, line in lines if pattern.search(line)), None)
        if hit is not None:
            stages.append({"stage": name, "at_s": hit, "rss_so_far_bytes": rss_at(hit)})
    last_scored = [t for t, line in lines if "firms scored[model]" in line]
    if last_scored:
        stages.append({"stage": "inference: last progress line", "at_s": last_scored[-1],
                       "rss_so_far_bytes": rss_at(last_scored[-1])})
    stages.sort(key=lambda s: s["at_s"])
    result = None
    try:
        result = json.loads(stdout[stdout.index("{"):]) if "{" in stdout else None
    except ValueError:
        result = None
    failed = proc.returncode != 0
    return {"cmd": " ".join(cmd), "returncode": proc.returncode, "wall_s_observed": wall_here,
            **report, "sampled_peak_rss_bytes": max((r for _, r in samples), default=0),
            "stages": stages, "result": result, "log": log_path,
            "error_tail": "\n".join(line for _, line in lines[-60:]) if failed else None}


PROFILE_FUNCTIONS = (  # (stage, module, qualified name); cumulative time in the cProfile stats
    ("whole Beam pipeline", "apache_beam.pipeline", "Pipeline.run"),
    ("read feeds (Parquet batches)", "apache_beam.io.parquetio", "_ParquetSource.read_records"),
    ("validate feeds", "transforms.beam_features", "validate_batch"),
    ("index firms", "transforms.beam_features", "build_firm_index"),
    ("key records by shard", "transforms.beam_features", "key_by_shard"),
    ("  shard files written", "transforms.shard_files", "write"),
    ("featurize shards", "transforms.beam_features", "featurize_shard"),
    ("  shard files read", "transforms.shard_files", "read"),
    ("  duplicates check", "transforms.validate", "split_duplicates"),
    ("  firm frames", "transforms.pit", "FirmFrames.from_tables"),
    ("  point-in-time features", "transforms.pit", "compute_features"),
    ("  features to Arrow", "transforms.pit", "feature_table"),
    ("route firms", "beam_jobs.stages", "RouteFirms.process"),
    ("inference + attributions", "beam_jobs.inference", "ChampionChallengersHandler.run_inference"),
    ("  raw_inputs", "models.signature", "raw_inputs"),
    ("  model load", "beam_jobs.inference", "ChampionChallengersHandler.load_model"),
    ("official/shadow split", "beam_jobs.champion_challenger", "split_official_and_shadow"),
    ("  score rows + reasons", "models.score_rows", "model_rows"),
    ("    reasons", "models.reasons", "reasons_for"),
    ("    attributions table", "models.score_rows", "attributions_table"),
    ("rules rows", "models.score_rows", "rules_rows"),
    ("firm segments", "beam_jobs.publish", "firm_segments_of"),
    ("drift counts", "beam_jobs.drift", "DriftCombineFn.add_input"),
    ("staging sinks: parts", "beam_jobs.sinks", "write_part"),
    ("staging sinks: sort parts into Parquet", "beam_jobs.sinks", "merge_parts"),
    ("portfolio summary (worker)", "beam_jobs.publish", "stage_summary"),
    ("publish (driver, after the pipeline)", "beam_jobs.publish", "RunContext.publish"),
    ("  DuckDB publish", "smescore.warehouse", "Warehouse.publish"),
    ("input fingerprint (driver, before)", "beam_jobs.sources", "input_fingerprint"),
)


def _code_key(module: str, qualname: str):
    """(file, first line, name) of a function, as cProfile keys it; None when it cannot be found."""
    import importlib
    import inspect
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        code = inspect.unwrap(obj).__code__
    except Exception:  # noqa: BLE001 - a renamed function just drops its row
        return None
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_summary(path: str) -> list[dict]:
    import pstats
    stats = pstats.Stats(path).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    rows = []
    for stage, module, qualname in PROFILE_FUNCTIONS:
        key = _code_key(module, qualname)
        if key is None or key not in stats:
            continue
        _, nc, _, ct, _ = stats[key]
        rows.append({"stage": stage, "function": f"{module}.{qualname}", "calls": nc, "cumulative_s": ct})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--firms", type=int, nargs="*", default=[25_000, 100_000],
                        help="portfolio sizes to time (none: only --profile-firms)")
    parser.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period")
    parser.add_argument("--profile-firms", type=int, nargs="*", default=[],
                        help="sizes to profile with cProfile after the timed runs")
    parser.add_argument("--max-wall-s", type=float, default=None,
                        help="skip sizes whose time, extrapolated linearly from the last, exceeds this")
    args, score_args = parser.parse_known_args(argv)

    registry, version = ensure_model(args.work, args.registry, args.train_firms, args.seed)
    logs = os.path.join(args.work, "logs")
    os.makedirs(logs, exist_ok=True)
    results = {"model_version": version, "registry": registry,
               "model_trained_on": f"{args.train_firms} firms x 36 months (seed {args.seed})"
               if args.registry is None else args.registry, "sizes": []}
    print(f"nightly run at scale: model {version} from {results['model_trained_on']}; "
          f"feeds {args.months} months as of {args.as_of}")
    previous = None
    for firms in sorted(args.firms):
        if previous and args.max_wall_s:
            projected = previous["wall_s"] * firms / previous["firms"]
            if projected > args.max_wall_s:
                print(f"\n{firms:,} firms: skipped (projected {projected:.0f}s > --max-wall-s)")
                continue
        t0 = time.perf_counter()
        feeds = ensure_feeds(args.work, firms, args.months, args.seed)
        gen_s = time.perf_counter() - t0
        log(f"[nightly_scale] scoring {firms:,} firms")
        run = timed_score(feeds, registry, args.as_of, os.path.join(args.work, f"warehouse-{firms}.duckdb"),
                          os.path.join(logs, f"score-{firms}.log"), args.sample_s, score_args)
        run.update(firms=firms, feeds=feeds, feeds_ready_s=gen_s)
        results["sizes"].append(run)
        print_run(run)
        if run["returncode"] == 0:
            previous = run
    ok = [r for r in results["sizes"] if r["returncode"] == 0]
    if len(ok) >= 2:
        small, big = ok[0], ok[-1]
        firm_ratio, time_ratio = big["firms"] / small["firms"], big["wall_s"] / small["wall_s"]
        results["time_ratio"] = time_ratio
        print(f"\n{big['firms']:,}/{small['firms']:,} firms ({firm_ratio:.1f}x): time ratio {time_ratio:.2f}x "
              f"(goal <= {1.1 * firm_ratio:.1f}x: {'met' if time_ratio <= 1.1 * firm_ratio else 'MISSED'}); "
              f"RSS ratio {tree_peak_rss(big) / tree_peak_rss(small):.2f}x")
    for firms in args.profile_firms:
        feeds = ensure_feeds(args.work, firms, args.months, args.seed)
        prof = os.path.join(args.work, f"score-{firms}.prof")
        log(f"[nightly_scale] profiling {firms:,} firms under cProfile")
        run = timed_score(feeds, registry, args.as_of, os.path.join(args.work, f"warehouse-prof-{firms}.duckdb"),
                          os.path.join(logs, f"score-prof-{firms}.log"), args.sample_s, score_args,
                          prefix=[CLI[0], "-m", "cProfile", "-o", prof, "-m", "smescore.cli"],
                          env={"SMESCORE_WORKER_PROCESSES": "1"})   # cProfile sees one process
        summary = profile_summary(prof) if os.path.exists(prof) else []
        results.setdefault("profiles", []).append({"firms": firms, "wall_s": run.get("wall_s"),
                                                   "stages": summary, "pstats": prof})
        print(f"\nprofile at {firms:,} firms (under cProfile: {run.get('wall_s', float('nan')):.0f}s wall, "
              f"{run.get('cpu_s', float('nan')):.0f}s CPU; cumulative seconds, nested rows indented):")
        for row in summary:
            print(f"  {row['stage']:<34} {row['cumulative_s']:8.1f}s  {row['calls']:>8} calls  {row['function']}")
    write_json(args.json, results)
    return results


def tree_peak_rss(run: dict) -> int:
    """The run's peak RSS: /usr/bin/time's (its largest single process) or the sampled sum over
    the job and its worker processes (transforms/process_pool.py), whichever is larger."""
    return max(run.get("peak_rss_bytes", 0), run["sampled_peak_rss_bytes"])


def print_run(run: dict) -> None:
    firms = run["firms"]
    if run["returncode"] != 0:
        print(f"\n{firms:,} firms: FAILED (exit {run['returncode']}) after {run.get('wall_s', run['wall_s_observed']):.0f}s, "
              f"peak RSS {run.get('peak_rss_bytes', run['sampled_peak_rss_bytes']) / GIB:.2f} GiB; log {run['log']}")
        print("  stages seen: " + "; ".join(f"{s['stage']} at {_clock(s['at_s'])}" for s in run["stages"]))
        print("  last lines:\n    " + "\n    ".join((run["error_tail"] or "").splitlines()[-25:]))
        return
    res = run["result"] or {}
    wall, rss, cpu = run["wall_s"], tree_peak_rss(run), run.get("cpu_s", float("nan"))
    print(f"\n{firms:,} firms: wall {_clock(wall)} ({wall:.1f}s), peak RSS {rss / GIB:.2f} GiB "
          f"(the job and its worker processes), CPU {cpu:.0f}s, CPU / wall {cpu / wall:.2f}  "
          f"[{run['cmd']}]")
    if firms >= 1_000_000:
        print(f"  goals at 1M: time <= 10 min {'met' if wall <= 600 else 'MISSED'}, "
              f"RSS <= 6 GiB {'met' if rss <= 6 * GIB else 'MISSED'}, "
              f"CPU / wall >= 1.6 {'met' if cpu / wall >= 1.6 else 'MISSED'}")
    elif firms >= 100_000:
        print(f"  goals at 100k: time <= 10 min {'met' if wall <= 600 else 'MISSED'}, "
              f"RSS <= 4 GiB {'met' if rss <= 4 * GIB else 'MISSED'}")
    print(f"  scored {res.get('firms', 0):,} firms: model {res.get('firms_scored_model', 0):,}, rules "
          f"{res.get('firms_scored_rules', 0):,}, in default {res.get('firms_in_default', 0):,}; rejected "
          f"records {res.get('rows_rejected', 0):,}; feeds ready in {run['feeds_ready_s']:.0f}s (not counted)")
    expected_model = firms - res.get("firms_scored_rules", 0) - res.get("firms_in_default", 0)
    if res and res.get("firms_scored_model", 0) < expected_model:
        print(f"  WARNING: {expected_model - res.get('firms_scored_model', 0):,} model-routed firms have no "
              f"score (inference failures became rejected records) — see the warehouse's rejected_records")
    print("  timeline: " + "; ".join(f"{s['stage']} at {_clock(s['at_s'])} (RSS {s['rss_so_far_bytes'] / GIB:.2f} GiB)"
                                    for s in run["stages"]))


if __name__ == "__main__":
    main()
