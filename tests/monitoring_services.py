"""Real services for the monitoring tests: a Pushgateway process and headless Chromium.

Both are Debian packages that `make system-deps` (infra/install_system_deps.sh) installs; a test that
needs one fails, naming that command, when it is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.processes import free_port, stop


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run `make system-deps` "
                           f"(infra/install_system_deps.sh)")
    return path



def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def pushgateway(log_path: str):
    """A fresh Pushgateway on a free loopback port, metrics in memory only; yields 'host:port' and
    stops it after."""
    exe = executable("prometheus-pushgateway")
    for _ in range(3):                      # the port may be taken between probe and bind
        address = f"127.0.0.1:{free_port()}"
        log = open(log_path, "ab")
        # No persistence: Debian's default file (/var/lib/prometheus/pushgateway.data) is shared
        # machine state, and a test's gateway must start empty.
        proc = subprocess.Popen([exe, f"--web.listen-address={address}", "--persistence.file="],
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline and not _ready(
                f"http://{address}/-/ready"):
            time.sleep(0.1)
        if proc.poll() is None and _ready(f"http://{address}/-/ready"):
            break
        proc.kill()
        proc.wait()
        log.close()
    else:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            raise RuntimeError(f"the Pushgateway did not start:\n{fh.read()[-2000:]}")
    try:
        yield address
    finally:
        stop(proc)
        log.close()


def scrape(address: str, job: str, instance: str) -> dict[str, dict[tuple, float]]:
    """The gateway's /metrics, as {metric: {sorted labels without job/instance: value}} for one
    group (the gateway's own push_time_seconds etc. left out)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") != job or s.labels.get("instance") != instance:
                continue
            if not s.name.startswith("smescore_"):
                continue
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))
            out.setdefault(s.name, {})[key] = s.value
    return out


def groups(address: str) -> list[dict]:
    """The gateway's groups (their grouping-key labels), from its JSON API."""
    with urllib.request.urlopen(f"http://{address}/api/v1/metrics", timeout=5) as r:
        return [g["labels"] for g in json.load(r)["data"]]


def render(page_path: str, workdir: str) -> tuple[str, list[str]]:
    """Open a local HTML file in headless Chromium; return its DOM after scripts ran, and the URLs
    the PAGE asked the network for.

    Chromium's net log tells the page's requests (initiator: the page's origin, 'null' for a file)
    from the browser's own background traffic (initiator 'not an origin'). Host resolution is
    disabled, so nothing would leave the machine anyway.
    """
    net_log = os.path.join(workdir, "netlog.json")
    cmd = [executable("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--disable-background-networking",
           "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={os.path.join(workdir, 'chromium-profile')}",
           f"--log-net-log={net_log}", "--virtual-time-budget=15000", "--dump-dom",
           "file://" + os.path.abspath(page_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    with open(net_log, encoding="utf-8") as fh:
        log = json.load(fh)
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    fetched = [e["params"]["url"] for e in log["events"]
               if e["type"] == start_job and e.get("params", {}).get("url")
               and e["params"].get("initiator", "not an origin") != "not an origin"]
    return done.stdout, fetched
