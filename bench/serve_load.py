"""Load test of the scoring service on localhost: p50 / p95 / p99 latency and requests/s for
feature-value requests and raw-record requests at 1, 8 and 32 concurrent clients, then a hot swap
(a promote in the middle of the load: failed requests, and the model version of later answers).

    python -m bench.serve_load --registry DIR --feeds DIR [--seconds 15] [--clients 1,8,32]
        [--firms 200] [--hot-swap VERSION] [--json FILE]

`smescore serve` runs as its own process (uvicorn, one worker, dynamic batching) on a copy of the
registry (the hot swap promotes in the copy); the clients are asyncio tasks in this process,
each on its own keep-alive HTTP/1.1 connection (`Connection`: the load generator shares the
machine, so it is lean, and its own CPU a request is reported). Each request is one firm:
feature values of a firm (computed here with the service's own feature path from the feeds) or its raw feed records with
its related firms'. Bounded: every level runs --seconds, requests time out after 30 s. On a shared
machine the figures move with the neighbours' load: say so beside them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import orjson

from bench._common import CLI, child_env, log, repo_root, write_json

AS_OF = "2026-10-31"


def _feature_body(row: dict) -> dict:
    from transforms import catalog

    def plain(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    return {"firms": [{"enterprise_id": row["enterprise_id"], "as_of_date": str(row["as_of_date"]),
                       "months_history": row["months_history"], "in_default": row["in_default"],
                       "features": {f: plain(row[f]) for f in catalog.NAMES}}]}


def request_bodies(feeds: str, firms: int, as_of: dt.date, seed: int = 7):
    """(feature-value bodies, raw-record bodies) of `firms` firms drawn with `seed`."""
    from service import core, parity
    from service.feed_store import FeedStore
    store = FeedStore(feeds)
    ids = sorted(store.controller)
    chosen = [ids[i] for i in np.random.default_rng(seed).choice(len(ids), min(firms, len(ids)),
                                                                 replace=False)]
    features, records = [], []
    for firm in chosen:
        tables = store.group_of(firm)
        table, _ = core.features_from_records(tables, as_of, store.book_medians(as_of),
                                              strict=False)
        rows = {r["enterprise_id"]: r for r in table.to_pylist()}
        if firm not in rows:
            continue                      # established after the date
        features.append(_feature_body(rows[firm]))
        records.append({"enterprise_id": firm, "as_of_date": str(as_of),
                        "records": parity.records_json(tables)})
    return features, records


def start_service(registry: str, feeds: str | None, port: int, key_file: str, log_path: str):
    cmd = [*CLI, "serve", "--registry", registry, "--port", str(port), "--api-key-file", key_file]
    if feeds:
        cmd += ["--feeds", feeds]
    fh = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(),
                            cwd=repo_root())
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"the service was not ready in 300 s; see {log_path}")


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs bodies encoded before the clock starts, and
    reads the answer by its Content-Length: the load generator shares the service's 2 cores, so
    it must cost little. httpx cost 2.2-4.0 ms of this process's CPU a feature-value request and
    7.2-7.5 ms a raw-record one (its request and response objects, and `json=` encoding each body
    inside the timed window: up to 0.5 MB of raw records), over half a core at 32 clients taken
    from the service it measured; this costs 0.2-0.8 ms."""

    def __init__(self, host: str, port: int, key: str):
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def request(self, path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n"
                .encode("ascii") + body)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of one request made by `request`, connecting first if need be."""
        if self.writer is None:
            await self.open()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise RuntimeError(f"the service answered with Transfer-Encoding {value.strip()}; "
                                   f"this load generator reads Content-Length bodies only")
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {lines[0]}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        """Closed; the next `send` connects again (after a failed or timed-out request, whose
        answer may still be on its way on the old connection)."""
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def load(url: str, key: str, path: str, bodies: list, clients: int, seconds: float) -> dict:
    """`clients` workers, each sending one request after another on its own connection for
    `seconds`. Bodies are encoded and every connection opened (one untimed request each) before
    the clock starts: the latency is the service's, not the making of a client (an httpx client
    built a TLS context, ~20 ms of CPU each, and 32 made in the timed window stalled the answers
    on their way for ~0.6 s) or of a request. Also reports this process's own CPU a request."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    pool = [Connection(host, int(port), key) for _ in range(clients)]
    requests = [pool[0].request(path, orjson.dumps(b)) for b in bodies]
    latencies, statuses, versions = [], {}, []

    async def worker(k: int, c: Connection):
        i = k
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                status, answer = await asyncio.wait_for(c.send(requests[i % len(requests)]), 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as err:
                status, answer = type(err).__name__, None     # counted; the next one reconnects
                await c.close()
            end = time.monotonic()
            latencies.append(end - start)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                body = orjson.loads(answer)
                answer = body["scores"][0] if "scores" in body else body
                versions.append((start, end, answer["model_version"], answer["model_role"]))
            i += clients

    try:
        await asyncio.gather(*(c.open() for c in pool))
        await asyncio.gather(*(c.send(requests[k % len(requests)]) for k, c in enumerate(pool)))
        cpu, began = time.process_time(), time.monotonic()
        stop = began + seconds
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(pool)))
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    lat = np.asarray(latencies) * 1000
    return {"path": path, "clients": clients, "requests": len(lat), "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "statuses": {str(k): v for k, v in statuses.items()},
            "load_cpu_ms_per_request": round(cpu * 1000 / max(len(lat), 1), 2),
            "versions": versions}


async def hot_swap(url: str, key: str, registry: str, version: str, bodies: list,
                   clients: int, seconds: float) -> dict:
    """Promote `version` in the middle of a load run; failed requests and versions after it."""
    from models import lifecycle

    async def promote_later():
        await asyncio.sleep(seconds / 3)
        at = time.monotonic()
        await asyncio.to_thread(lifecycle.promote, registry, version, why="bench hot swap",
                                override="bench/serve_load.py hot swap")
        return at

    promote = asyncio.create_task(promote_later())
    result = await load(url, key, "/v1/score/features", bodies, clients, seconds)
    promoted_at = await promote
    versions = result.pop("versions")
    # before the swap the promoted version already answers for the canary firms (role canary);
    # after it, as the champion
    first_new = min((end for start, end, v, role in versions
                     if v == version and role == "champion" and start > promoted_at), default=None)
    after = [v for start, end, v, _ in versions if first_new is not None and start > first_new]
    failed = sum(n for s, n in result["statuses"].items() if s != "200")
    return {**result, "promoted": version, "failed_requests": failed,
            "swap_seen_after_s": None if first_new is None else round(first_new - promoted_at, 2),
            "answers_after_swap": len(after),
            "answers_after_swap_with_old_version": sum(v != version for v in after)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc): the service's own CPU per
    request, which the neighbours' load does not inflate the way it inflates wall time."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", required=True)
    p.add_argument("--feeds", required=True)
    p.add_argument("--as-of", default=AS_OF)
    p.add_argument("--firms", type=int, default=200, help="distinct firms the requests cycle over")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--seconds", type=float, default=15.0, help="per level")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--hot-swap", default=None, metavar="VERSION",
                   help="promote this version (in the registry copy) during a last run")
    p.add_argument("--hot-swap-clients", type=int, default=8)
    p.add_argument("--work", default="/tmp/bench-serve")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    registry = tempfile.mkdtemp(prefix="registry-", dir=args.work)
    shutil.rmtree(registry)
    shutil.copytree(args.registry, registry)
    key = secrets.token_urlsafe(24)
    key_file = os.path.join(args.work, "api_keys")
    with open(key_file, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    log(f"[bench] request bodies for {args.firms} firms")
    features, records = request_bodies(args.feeds, args.firms, dt.date.fromisoformat(args.as_of))
    log(f"[bench] starting the service (registry copy {registry})")
    proc = start_service(registry, args.feeds, args.port, key_file,
                         os.path.join(args.work, "serve.log"))
    url = f"http://127.0.0.1:{args.port}"
    results = {"machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
               "levels": []}
    try:
        for path, bodies in (("/v1/score/features", features), ("/v1/score/records", records)):
            asyncio.run(load(url, key, path, bodies, 1, 3.0))          # warm-up, not counted
            for clients in (int(c) for c in args.clients.split(",")):
                cpu = cpu_seconds(proc.pid)
                r = asyncio.run(load(url, key, path, bodies, clients, args.seconds))
                r["service_cpu_ms_per_request"] = round(
                    (cpu_seconds(proc.pid) - cpu) * 1000 / max(r["requests"], 1), 1)
                r.pop("versions")
                results["levels"].append(r)
                log(f"[bench] {path} x{clients}: {r['requests_per_s']} req/s, p50 {r['p50_ms']} "
                    f"p95 {r['p95_ms']} p99 {r['p99_ms']} ms, CPU a request: service "
                    f"{r['service_cpu_ms_per_request']} ms, load generator "
                    f"{r['load_cpu_ms_per_request']} ms; statuses {r['statuses']}")
        if args.hot_swap:
            r = asyncio.run(hot_swap(url, key, registry, args.hot_swap, features,
                                     args.hot_swap_clients, max(args.seconds, 12)))
            results["hot_swap"] = r
            log(f"[bench] hot swap to {args.hot_swap}: {r['failed_requests']} failed of "
                f"{r['requests']}, new version seen {r['swap_seen_after_s']} s after the promote, "
                f"{r['answers_after_swap_with_old_version']} old answers after it")
        metrics = httpx.get(f"{url}/metrics").text
        rows = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith(("smescore_service_batch_rows_sum ",
                                    "smescore_service_batch_rows_count "))}
        calls = rows.get("smescore_service_batch_rows_count", 0)
        results["model_calls"] = int(calls)
        results["mean_firms_per_model_call"] = (
            round(rows["smescore_service_batch_rows_sum"] / calls, 2) if calls else None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    results["load_average_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results, indent=2))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
