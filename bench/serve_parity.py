"""Acceptance check of the scoring service against a published night: for N firms of the book,
the service's answer from raw records and from feature values equals the nightly tables (PD and
points to 1e-9; score, grade, model version and role, reasons, shadow scores exactly).

    python -m bench.serve_parity --feeds DIR --registry DIR --warehouse F.duckdb
        [--as-of 2026-10-31] [--firms 1000] [--seed 7] [--features F.parquet] [--json FILE]

The night must have been scored with the registry as it is now (same champion and challengers)
and the default --canary_share / --min_history_months. The feature values sent are the nightly
feature table (`smescore features`, Beam's ComputeFeatures, run here into --work); the raw records
are each firm's and its related firms' rows of the feeds. The service runs in this process
(FastAPI through starlette's TestClient: the real app, no network in between).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq

from bench._common import CLI, log, run_logged, write_json
from bench.serve_load import _feature_body


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feeds", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--as-of", default="2026-10-31")
    p.add_argument("--firms", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work", default="/tmp/bench-serve")
    p.add_argument("--features", default=None,
                   help="the nightly feature table already made (`smescore features`) instead of "
                        "making it again into --work")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    as_of = dt.date.fromisoformat(args.as_of)
    from smescore import runtime
    runtime.load_tensorflow()
    from fastapi.testclient import TestClient

    from service import parity
    from service.app import ServiceConfig, create_app
    os.makedirs(args.work, exist_ok=True)
    features_path = args.features or os.path.join(args.work, f"features-{args.as_of}.parquet")
    if not args.features:
        log(f"[parity] nightly feature table (smescore features) -> {features_path}")
        run_logged([*CLI, "features", "--feeds", args.feeds, "--as-of", args.as_of, "--out",
                    features_path], os.path.join(args.work, "features.log"))
    features = {r["enterprise_id"]: r for r in pq.read_table(features_path).to_pylist()}
    expected = parity.nightly(args.warehouse, as_of)
    ids = sorted(expected)
    chosen = sorted(ids[i] for i in np.random.default_rng(args.seed).choice(
        len(ids), min(args.firms, len(ids)), replace=False))
    app = create_app(ServiceConfig(args.registry, args.feeds, api_keys=None,
                                   max_body_bytes=64 * 1024 * 1024))
    problems = {"records": [], "features": []}
    kinds: dict[str, int] = {}
    start = time.time()
    with TestClient(app) as client:
        store = app.state.service.feed_store
        for n, firm in enumerate(chosen, start=1):
            row = expected[firm]["row"]
            kind = f"{row['score_source']}/{row['model_role']}"
            kinds[kind] = kinds.get(kind, 0) + 1
            r = client.post("/v1/score/records", json={
                "enterprise_id": firm, "as_of_date": args.as_of,
                "records": parity.records_json(store.group_of(firm))})
            problems["records"] += (parity.differences(r.json(), expected[firm])
                                    if r.status_code == 200 else [f"{firm}: {r.status_code} "
                                                                  f"{r.text[:300]}"])
            if n % 100 == 0:
                log(f"[parity] {n}/{len(chosen)} firms from raw records, "
                    f"{len(problems['records'])} differences so far")
        for i in range(0, len(chosen), 200):
            batch = chosen[i:i + 200]
            body = {"firms": [_feature_body(features[f])["firms"][0] for f in batch]}
            r = client.post("/v1/score/features", json=body)
            if r.status_code != 200:
                problems["features"].append(f"batch {i}: {r.status_code} {r.text[:300]}")
                continue
            for firm, answer in zip(batch, r.json()["scores"]):
                problems["features"] += parity.differences(answer, expected[firm])
    result = {"firms": len(chosen), "by_kind": kinds, "seconds": round(time.time() - start, 1),
              "differences_from_records": len(problems["records"]),
              "differences_from_features": len(problems["features"]),
              "first_differences": problems["records"][:5] + problems["features"][:5]}
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    return 0 if not problems["records"] and not problems["features"] else 1


if __name__ == "__main__":
    sys.exit(main())
