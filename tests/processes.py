"""Local service processes the tests start (the BigQuery emulator, a Pushgateway)."""
from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A loopback port free now (another process may take it before it is bound: retry then)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate, and kill what does not exit within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
