"""A model registry on a filesystem path: one folder per version, a pointer to the champion.

    <registry>/versions/<version>/saved_model/      the hermetic SavedModel
    <registry>/versions/<version>/transform_fn/     the TFT output (kept for audits and retraining)
    <registry>/versions/<version>/model_card.json
    <registry>/versions/<version>/background.parquet  the SHAP background firms (raw features)
    <registry>/versions/<version>/network.keras       the bare network (audits, evaluation path)
    <registry>/versions/<version>/logs/             TensorBoard logs of the training run
    <registry>/versions/<version>/validation.json   `smescore validate`'s checks (promote reads it)
    <registry>/versions/<version>/validation_rows.parquet  the firm-dates they were measured on
    <registry>/champion.json                        {"version": ...}
    <registry>/challengers.json                     {"versions": [...]} scored in shadow; the
                                                    first is the canary

A version folder is written under a temporary name and renamed into place, so a reader never sees
half a model. Training writes a local registry (copy it to Cloud Storage with `gcloud storage rsync`);
reading — versions, champion, challengers, model cards — goes through Beam's filesystems, so the
nightly job on Dataflow reads the same layout from gs:// (and TensorFlow loads the SavedModel there).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems   # gs:// registries (a file system, no pipeline)

from smescore import files
from smescore.errors import BadInput
from transforms import catalog

VERSIONS = "versions"
CHAMPION = "champion.json"
CHALLENGERS = "challengers.json"
MODEL_CARD = "model_card.json"
SAVED_MODEL = "saved_model"
TRANSFORM_FN = "transform_fn"
BACKGROUND = "background.parquet"
NETWORK = "network.keras"
VALIDATION = "validation.json"


class ModelMismatch(BadInput):
    """A version this code cannot score: trained on another feature catalogue."""


class Registry:
    def __init__(self, root: str):
        self.root = root

    def version_dir(self, version: str) -> str:
        return os.path.join(self.root, VERSIONS, version)

    def versions(self) -> list[str]:
        """Published versions: the folders holding a model card (local or gs://)."""
        found = FileSystems.match([os.path.join(self.root, VERSIONS, "*", MODEL_CARD)])[0]
        names = (m.path.replace("\\", "/").split("/")[-2] for m in found.metadata_list)
        return sorted(v for v in names if not v.startswith("."))

    def staging_dir(self) -> str:
        """A fresh folder inside the registry to build a version in (same filesystem: rename works)."""
        os.makedirs(os.path.join(self.root, VERSIONS), exist_ok=True)
        return files.as_created(
            tempfile.mkdtemp(prefix=".staging-", dir=os.path.join(self.root, VERSIONS)))

    def publish(self, staging: str, version: str) -> str:
        """Move a finished staging folder to versions/<version>; an existing version is replaced
        only if it is the same model (same version id = same data, transform and parameters)."""
        target = self.version_dir(version)
        if os.path.exists(target):
            old = os.path.join(self.root, VERSIONS, f".old-{version}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
        return target

    def model_card(self, version: str) -> dict:
        path = os.path.join(self.version_dir(version), MODEL_CARD)
        try:
            return read_json(path)
        except (FileNotFoundError, OSError) as err:
            if isinstance(err, RegistryError):
                raise
            raise RegistryError(
                f"no model version {version!r} in registry {self.root!r} ({path} cannot be read: "
                f"{type(err).__name__}); `smescore challenger list --registry {self.root}` shows "
                f"the champion and challengers, `smescore train` makes a version") from None

    def saved_model_path(self, version: str) -> str:
        return os.path.join(self.version_dir(version), SAVED_MODEL)

    def champion(self) -> str:
        path = os.path.join(self.root, CHAMPION)
        if not FileSystems.exists(path):
            raise RegistryError(f"no champion in registry {self.root!r}: run `smescore train` "
                                f"first (it promotes its model when there is none), or give "
                                f"--model-version")
        version = read_json(path)["version"]
        if version not in self.versions():
            raise RegistryError(f"champion {version!r} ({path}) is not a version in "
                                f"{self.root!r}: `smescore promote VERSION` one that is")
        return version

    def set_champion(self, version: str) -> None:
        if version not in self.versions():
            raise ValueError(f"unknown model version {version!r}; known: {self.versions()}")
        write_json_atomically(os.path.join(self.root, CHAMPION), {"version": version})


    def challengers(self) -> list[str]:
        """Versions scored in shadow next to the champion, in order; the first is the canary."""
        path = os.path.join(self.root, CHALLENGERS)
        if not FileSystems.exists(path):
            return []
        versions = list(read_json(path)["versions"])
        unknown = [v for v in versions if v not in self.versions()]
        if unknown:
            raise RegistryError(f"challengers {unknown} ({path}) are not versions in "
                                f"{self.root!r}: `smescore challenger remove VERSION`")
        return versions

    def set_challengers(self, versions: list[str]) -> None:
        unknown = [v for v in versions if v not in self.versions()]
        if unknown:
            raise ValueError(f"unknown model versions {unknown}; known: {self.versions()}")
        if len(set(versions)) != len(versions):
            raise ValueError(f"a challenger is listed twice: {versions}")
        write_json_atomically(os.path.join(self.root, CHALLENGERS), {"versions": list(versions)})


class RegistryError(BadInput, FileNotFoundError):
    """A registry entry that is missing or unreadable; the message names it and what to run."""


def read_json(path: str) -> dict:
    """A registry JSON file, on a local path or gs://."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        text = fh.read()
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryError(f"{path} is not valid JSON ({err}): restore it from the registry's "
                            f"copy or retrain the version") from None


def write_json_atomically(path: str, payload: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, ensure_ascii=False)
        os.replace(files.as_created(tmp), path)
    except BaseException:            # e.g. a value JSON cannot hold: leave no half file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_model_features(version: str, card: dict) -> None:
    """The SavedModel's signature takes the catalogue of the code that trained it: refuse to run a
    version whose features differ from this code's, instead of dead-lettering every firm."""
    trained, now = list(card.get("features", [])), list(catalog.NAMES)
    if trained != now:
        missing, extra = sorted(set(now) - set(trained)), sorted(set(trained) - set(now))
        raise ModelMismatch(
            f"model {version} was trained on another feature catalogue (features new since: "
            f"{missing or 'none'}; dropped since: {extra or 'none'}"
            f"{'; same set, other order' if not missing and not extra else ''}); retrain with "
            f"`smescore train` or score with a matching version")


SAVED_MODEL_FILES = ("saved_model.pb", "variables/variables.index")


def check_saved_model(version: str, path: str) -> None:
    """Refuse a version whose SavedModel lacks its graph or weights before the pipeline starts
    (each worker would otherwise fail to load it, deep inside RunInference)."""
    missing = [f for f in SAVED_MODEL_FILES if not FileSystems.exists(f"{path}/{f}")]
    if missing:
        raise BadInput(f"model {version}: the SavedModel at {path} has no {', '.join(missing)}; "
                       f"restore or re-register the version, or score with another "
                       f"--model_version")
