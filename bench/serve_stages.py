"""Where one raw-record request of the scoring service spends its CPU, stage by stage, in process
(no HTTP, no neighbours' load in the figures: CPU time of this process, not wall time).

    python -m bench.serve_stages --registry DIR --feeds DIR [--firms 60] [--as-of D] [--json F]

Per firm (its records and its related firms', as a /v1/score/records body): pydantic parsing,
the feed tables, the nightly validation, the point-in-time features, the model calls (every
version's score signature, the official version's explain signature) with the score rows, and the
answer's JSON. Medians and 95th percentiles over the firms, in CPU milliseconds; TensorFlow's own
threads count too (their CPU is this process's).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

import numpy as np
import orjson

from bench._common import log, write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", required=True)
    p.add_argument("--feeds", required=True)
    p.add_argument("--as-of", default="2026-10-31")
    p.add_argument("--firms", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from smescore import runtime
    runtime.load_tensorflow()
    from service import core, parity, schemas
    from service.app import firm_score
    from service.feed_store import FeedStore
    from transforms import book_relative, pit
    as_of = dt.date.fromisoformat(args.as_of)
    models = core.load_model_set(args.registry)
    store = FeedStore(args.feeds)
    medians = store.book_medians(as_of)        # once per date, as the service caches it
    ids = sorted(store.controller)
    chosen = [ids[i] for i in np.random.default_rng(args.seed).choice(
        len(ids), min(args.firms, len(ids)), replace=False)]
    bodies = [orjson.dumps({"enterprise_id": f, "as_of_date": args.as_of,
                            "records": parity.records_json(store.group_of(f))}) for f in chosen]

    def request(raw: bytes, clock) -> dict | None:
        times, t = {}, clock()

        def mark(stage):
            nonlocal t
            now = clock()
            times[stage] = (now - t) * 1000
            t = now
        body = schemas.RecordsRequest.model_validate_json(raw)   # as service/app.py records_body
        mark("json + pydantic")
        # as the service does (service/app.py _tables)
        tables = {feed: core.feed_table(feed, getattr(body.records, feed)) for feed in core.FEEDS}
        mark("feed tables")
        valid, _ = core.validated_tables(tables, strict=True)
        mark("validation")
        features = pit.compute_features(pit.FirmFrames.from_tables(valid), as_of)
        mark("point-in-time features")
        features = book_relative.adjust(features, {as_of: medians})
        mark("read against the book")
        firms = features.column("enterprise_id").to_pylist()
        if body.enterprise_id not in firms:
            return None
        scored = core.score_table(models, features.slice(firms.index(body.enterprise_id), 1))[0]
        mark(f"model calls + score rows [{scored.row['score_source']}]")
        orjson.dumps(firm_score(scored))
        mark("answer JSON")
        return times

    for raw in bodies[:5]:
        request(raw, time.process_time)              # warm-up, not counted
    per_stage: dict[str, list[float]] = {}
    totals = []
    for raw in bodies:
        times = request(raw, time.process_time)
        if times is None:
            continue
        for stage, ms in times.items():
            per_stage.setdefault(stage, []).append(ms)
        totals.append(sum(times.values()))
    result = {"firms": len(totals), "cpu_ms": {
        stage: {"n": len(v), "p50": round(float(np.median(v)), 2),
                "p95": round(float(np.percentile(v, 95)), 2)} for stage, v in per_stage.items()},
        "total_cpu_ms": {"p50": round(float(np.median(totals)), 2),
                         "p95": round(float(np.percentile(totals, 95)), 2)}}
    for stage, v in result["cpu_ms"].items():
        log(f"[stages] {stage}: p50 {v['p50']} ms, p95 {v['p95']} ms CPU ({v['n']} firms)")
    log(f"[stages] total: p50 {result['total_cpu_ms']['p50']} ms CPU")
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
