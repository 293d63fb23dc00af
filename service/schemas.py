"""Requests and responses of the scoring service, as pydantic models (they make the OpenAPI page).

Feed records are typed from the feed contract (transforms/feeds.py), one model per feed, with
unknown columns refused; feature values from the catalogue (transforms/catalog.py), every feature
named (null = missing), unknown names refused. Numbers must be JSON numbers and flags JSON booleans:
"12.5" in quotes is a wrong type, not a number.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional, Union

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, Strict, create_model
from typing_extensions import NotRequired, TypedDict

from transforms import catalog, feeds, pit

MAX_FIRMS_PER_REQUEST = 1000


def _whole(dtype) -> type:
    """A JSON whole number that fits the Arrow column's integer type: a larger one is a 422
    naming its field, not an overflow deep in the Arrow conversion."""
    info = np.iinfo(dtype)
    return Annotated[int, Strict(), Field(ge=int(info.min), le=int(info.max))]


# A float column takes a JSON whole number too, as a float: Arrow refuses a Python int that its
# float type cannot hold exactly (a registered capital of 20,000,001 in a float32 feature).
Number = Annotated[float, Strict()]
Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _python_type(t: pa.DataType):
    if pa.types.is_date32(t):
        return dt.date
    if pa.types.is_boolean(t):
        return Flag
    if pa.types.is_integer(t):
        return _whole(t.to_pandas_dtype())
    if pa.types.is_floating(t):
        return Number
    return Text


def _record_model(feed: feeds.Feed) -> type:
    """One feed record: a closed TypedDict of the feed's columns, each optional (absent = null).
    Plain dicts, not model instances: a firm's 3,300 records validate in ~40% less time, and
    Arrow turns them into the feed's table in one conversion (service/core.py feed_table)."""
    fields = {f.name: NotRequired[Annotated[Optional[_python_type(f.type)], Field(
        description=f.metadata[b"description"].decode())]] for f in feed.schema}
    name = "".join(p.title() for p in feed.name.split("_")) + "Record"
    record = TypedDict(name, fields)
    record.__doc__ = feed.description
    record.__pydantic_config__ = ConfigDict(extra="forbid")
    return record


RECORD_MODELS = {name: _record_model(feed) for name, feed in feeds.FEEDS.items()}

FeedRecords = create_model(
    "FeedRecords", __base__=_Closed,
    __doc__="Feed records of the firm and of its related firms (same controller_id): every "
            "record the nightly job would read for them, any date (later ones are ignored).",
    **{name: (list[model], Field(default_factory=list)) for name, model in RECORD_MODELS.items()})


def _feature_type(f: catalog.Feature):
    return Optional[Text] if f.is_categorical else Optional[Number]


FeatureValues = create_model(
    "FeatureValues", __base__=_Closed,
    __doc__="Every catalogue feature of the firm as of the date (null: missing), as the nightly "
            "feature table holds it.",
    **{f.name: (_feature_type(f), Field(..., description=f.desc_en)) for f in catalog.FEATURES})


# the feature table's months_history column holds it (service/core.py feature_table)
_MONTHS_MAX = int(np.iinfo(pit.FEATURE_SCHEMA.field("months_history").type.to_pandas_dtype()).max)


class FirmFeatures(_Closed):
    enterprise_id: Text = Field(..., min_length=1, max_length=64)
    as_of_date: dt.date
    months_history: Annotated[int, Strict()] = Field(
        ..., ge=0, le=_MONTHS_MAX,
        description="Months of invoice/tax/power history (cold-start rules below 6)")
    in_default: Flag = Field(False, description="Already 90+ days past due at the date (grade D)")
    features: FeatureValues


class FeaturesRequest(_Closed):
    firms: list[FirmFeatures] = Field(..., min_length=1, max_length=MAX_FIRMS_PER_REQUEST)


class RecordsRequest(_Closed):
    enterprise_id: Text = Field(..., min_length=1, max_length=64)
    as_of_date: dt.date
    records: FeedRecords


class Reason(BaseModel):
    code: str
    feature: str
    points: float
    text_zh: str
    text_en: str


class ShadowScore(BaseModel):
    model_version: Optional[str] = None
    model_role: str
    pd: Optional[float] = None
    score: Optional[int] = None
    grade: Optional[str] = None
    error: Optional[str] = None


class FirmScore(BaseModel):
    enterprise_id: str
    as_of_date: dt.date
    model_version: str
    model_role: Literal["champion", "canary"] = Field(
        ..., description="champion, or canary: the first challenger's score is the official one")
    score_source: Literal["model", "rules", "in_default"]
    pd: float
    score: int
    grade: str
    base_points: Optional[float] = Field(None, description="null for firms in default")
    points: dict[str, float] = Field(..., description="score points per feature (model: every "
                                     "feature; cold-start rules: the rule features)")
    reasons: list[Reason]
    shadow: list[ShadowScore] = Field(default_factory=list,
                                      description="challengers scored in shadow (not official)")


class ScoresResponse(BaseModel):
    scores: list[FirmScore]


class ParityResponse(BaseModel):
    enterprise_id: str
    as_of_date: dt.date
    equal: bool = Field(..., description="the live answer equals the night's row (PD and points "
                                         "to 1e-9; the rest exactly)")
    differences: list[str]
    service: FirmScore
    nightly: FirmScore


class Problem(BaseModel):
    loc: list[Union[str, int]]
    msg: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[Problem] = Field(default_factory=list)
