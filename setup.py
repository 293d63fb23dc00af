"""smescore: nightly SME portfolio rescoring from alternative data.

Also Beam's `--setup_file` for Dataflow workers: the worker image already carries the pinned lock
(infra/Dockerfile), so this only ships the project's own packages.
"""
import pathlib
import re

import setuptools

VERSION = re.search(r'__version__ = "([^"]+)"',
                    (pathlib.Path(__file__).parent / "smescore" / "__init__.py").read_text()).group(1)

setuptools.setup(
    name="smescore",
    version=VERSION,
    description="Nightly SME credit rescoring from alternative data, with reasons",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["smescore*", "beam_jobs*", "transforms*", "models*", "synth*",
                                               "service*"])
    + ["smescore.sql"],
    # sql/ (DDL, views, feed queries) ships inside the package as smescore/sql; see
    # smescore/sqlfiles.py.
    package_dir={"smescore.sql": "sql"},
    package_data={"smescore.config": ["*.json"], "smescore.sql": ["*/*.sql", "*/*/*.sql"]},
    entry_points={"console_scripts": ["smescore=smescore.cli:main"]},
)
