"""Packaged configuration: the score scale and master scale (scorecard.json), the cold-start
rules (cold_start_rules.json), the drift thresholds (drift.json), the publication gates
(gates.json) and the retention policy (retention.json). Read with importlib.resources, never at
import time."""
from __future__ import annotations

import json
from importlib import resources
from typing import Optional

from smescore.errors import BadInput


def read_json(name: str, path: Optional[str], what: str, hint: str = "") -> tuple[object, str]:
    """(the parsed JSON, where it came from): the file at `path`, else the packaged `name`.
    An unreadable file or bad JSON is BadInput naming `what`, the file and the cause (and `hint`,
    what the user can do about it)."""
    where = path or f"smescore/config/{name}"
    try:
        if path:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh), where
        return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8")), where
    except (OSError, ValueError) as err:
        raise BadInput(f"{what} {where}: cannot read it ({type(err).__name__}: "
                       f"{str(err).splitlines()[0]}){hint}") from None
