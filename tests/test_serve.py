"""The scoring service (service/): its answers equal the nightly tables, bad input gets a clear
4xx and the service goes on, a promote during load swaps models with no failed request, the
explanation page adds up. The real app (FastAPI through starlette's TestClient, or uvicorn on a
port), the session's two real models, a real nightly run on DirectRunner as the oracle."""
import asyncio
import datetime as dt
import json
import logging
import math
import re
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi.testclient import TestClient

from beam_jobs import build_features, champion_challenger, score_portfolio
from models import signature
from models.signature import with_model_outputs
from models import lifecycle
from service import commands, core, explain_page, parity, schemas
from service.app import ServiceConfig, create_app
from service.feed_store import FeedStore
from tests import handmade
from transforms import catalog, feeds
from tests.monitoring_services import render

AS_OF = dt.date(2026, 10, 31)
KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def book(registry_with_challenger, small_feeds, tmp_path_factory):
    """The nightly run of the session book with champion, challenger and the 10% canary:
    (registry, feeds, {firm: nightly rows}, champion, challenger, warehouse)."""
    src, champion, challenger = registry_with_challenger
    reg = str(tmp_path_factory.mktemp("serve") / "registry")
    shutil.copytree(src, reg)
    wh = str(tmp_path_factory.mktemp("serve-wh") / "risk.duckdb")
    score_portfolio.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}", f"--registry={reg}",
                         f"--warehouse={wh}", "--n_shards=4"], save_main_session=False,
                        progress=lambda m: None)
    return reg, small_feeds, parity.nightly(wh, AS_OF), champion, challenger, wh


@pytest.fixture(scope="module")
def client(book):
    reg, feeds, *_, wh = book
    app = create_app(ServiceConfig(reg, feeds, warehouse=wh, api_keys=(KEY.encode(),),
                                   max_body_bytes=2_000_000))
    with TestClient(app, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def beam_features(small_feeds, tmp_path_factory):
    """The nightly feature table (Beam's ComputeFeatures on DirectRunner) by firm."""
    out = str(tmp_path_factory.mktemp("features") / "features.parquet")
    build_features.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}", f"--out={out}",
                        "--n_shards=4"], save_main_session=False)
    return {r["enterprise_id"]: r for r in pq.read_table(out).to_pylist()}


def _feature_request(row: dict) -> dict:
    def plain(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    return {"enterprise_id": row["enterprise_id"], "as_of_date": str(row["as_of_date"]),
            "months_history": row["months_history"], "in_default": row["in_default"],
            "features": {f: plain(row[f]) for f in catalog.NAMES}}


# ----------------------------------------------------------------------------- parity

def test_batch_of_any_size_gives_every_firm_the_same_digits(book, beam_features):
    """The padding in inference.with_model_outputs: a firm alone, in 5 or in the whole book."""
    models = core.load_model_set(book[0])
    table = pa.Table.from_pylist(list(beam_features.values())[:300],
                                 schema=core.FEATURE_SCHEMA)
    model = models.models[models.champion]
    whole = with_model_outputs(table, model)
    for start, n in ((0, 1), (7, 5), (100, 129), (299, 1)):
        part = with_model_outputs(table.slice(start, n), model)
        for col in ("pd", "logit", "expected_logit", "phi"):
            assert part.column(col).to_pylist() == whole.column(col).slice(start, n).to_pylist()


def test_the_services_lean_model_calls_give_the_same_digits(book, beam_features):
    """The service's calls (signature.scores padded to MIN_ROWS for every firm, signature.
    attributions padded to ROW_BLOCKs for the firms explained, or the one explain call of
    signature.scores_and_attributions) against one explain call over 300 firms: every firm,
    alone, in 5, in 13 (two blocks, one partial) and in 129."""
    models = core.load_model_set(book[0])
    table = pa.Table.from_pylist(list(beam_features.values())[:300],
                                 schema=core.FEATURE_SCHEMA)
    for version, model in models.models.items():
        assert signature.explains_pd(model)          # today's exports pad their own PD pass
        whole = with_model_outputs(table, model)
        for start, n in [(i, 1) for i in range(0, 300, 7)] + [(7, 5), (40, 13), (100, 129)]:
            part = table.slice(start, n)
            two_calls = signature.with_outputs(part, signature.scores(part, model),
                                               signature.attributions(part, model))
            one_call = signature.with_outputs(part, *signature.scores_and_attributions(part, model))
            for col in ("pd", "logit", "expected_logit", "phi"):
                expected = whole.column(col).slice(start, n).to_pylist()
                assert two_calls.column(col).to_pylist() == expected, (version, start, n, col)
                assert one_call.column(col).to_pylist() == expected, (version, start, n, col)


def test_feature_values_give_the_nightly_scores_exactly(client, book, beam_features):
    expected = book[2]
    firms = sorted(expected)
    assert set(firms) == set(beam_features)
    answers = {}
    for i in range(0, len(firms), 150):
        r = client.post("/v1/score/features",
                        json={"firms": [_feature_request(beam_features[f]) for f in firms[i:i + 150]]})
        assert r.status_code == 200, r.text
        answers.update({a["enterprise_id"]: a for a in r.json()["scores"]})
    problems = [d for f in firms for d in parity.differences(answers[f], expected[f])]
    assert problems == []
    kinds = {(a["score_source"], a["model_role"]) for a in answers.values()}
    assert kinds == {("model", "champion"), ("model", "canary"), ("rules", "champion"),
                     ("in_default", "champion")}
    canary = [f for f, a in answers.items() if a["model_role"] == "canary"]
    model = [f for f, a in answers.items() if a["score_source"] == "model"]
    assert sorted(canary) == sorted(np.asarray(model)[champion_challenger.canary_mask(model, 0.10)])
    assert all(answers[f]["model_version"] == book[4] for f in canary)


def test_a_whole_number_a_float_feature_cannot_hold_exactly_is_read_as_its_float(client,
                                                                                 beam_features):
    """Feature values are float32: a JSON whole number above 2^24 is read as the float it is
    (the same answer as the number written with a decimal point), not refused by Arrow."""
    row = _feature_request(next(iter(beam_features.values())))
    answers = []
    for capital in (20_000_001, 20_000_001.0):
        row["features"]["ent_reg_capital"] = capital
        r = client.post("/v1/score/features", json={"firms": [row]})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert answers[0] == answers[1]


def _sample(expected: dict) -> list[str]:
    """Every canary, rules and in-default firm (a few dozen each) and every 12th champion firm."""
    by_kind = {}
    for f in sorted(expected):
        row = expected[f]["row"]
        by_kind.setdefault((row["score_source"], row["model_role"]), []).append(f)
    return (by_kind[("model", "canary")] + by_kind[("rules", "champion")][:40]
            + by_kind[("in_default", "champion")][:25] + by_kind[("model", "champion")][::12])


def test_raw_records_give_the_nightly_scores_exactly(client, book, small_feeds):
    """Each firm's records (and its related firms') as JSON, through the nightly validation and
    point-in-time features, equal the nightly rows, shadow scores included."""
    expected = book[2]
    store = FeedStore(small_feeds)
    sample = _sample(expected)
    assert len(sample) > 200
    problems = []
    for firm in sample:
        body = {"enterprise_id": firm, "as_of_date": str(AS_OF),
                "records": parity.records_json(store.group_of(firm))}
        r = client.post("/v1/score/records", json=body)
        assert r.status_code == 200, r.text
        problems += parity.differences(r.json(), expected[firm])
    assert problems == []


def test_firm_from_the_feed_folder_equals_the_nightly_row(client, book):
    expected = book[2]
    for firm in _sample(expected)[::10]:
        r = client.get(f"/v1/firms/{firm}/score", params={"as_of_date": str(AS_OF)})
        assert r.status_code == 200, r.text
        assert parity.differences(r.json(), expected[firm]) == []
    r = client.get("/v1/firms/NOPE/score", params={"as_of_date": str(AS_OF)})
    assert r.status_code == 404 and "NOPE" in r.json()["error"]


def test_the_nightly_tables_answer_as_the_night_published(client, book):
    """--warehouse: a firm's row of the night in the service's JSON (points, reasons, shadow),
    by date or its last night; the parity endpoint puts the live answer beside it."""
    expected = book[2]
    sample = _sample(expected)[::8]
    for firm in sample:
        r = client.get(f"/v1/firms/{firm}/nightly", params={"as_of_date": str(AS_OF)})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert parity.differences(answer, expected[firm]) == []
        assert answer["points"] == expected[firm]["points"]
    firm = sample[0]
    assert client.get(f"/v1/firms/{firm}/nightly").json()["as_of_date"] == str(AS_OF)
    r = client.get(f"/v1/firms/{firm}/nightly", params={"as_of_date": "2020-01-31"})
    assert r.status_code == 404 and firm in r.json()["error"]
    for firm in sample[::3]:
        r = client.get(f"/v1/firms/{firm}/parity", params={"as_of_date": str(AS_OF)})
        assert r.status_code == 200, r.text
        assert r.json()["equal"] is True and r.json()["differences"] == []
        assert r.json()["service"]["score"] == expected[firm]["row"]["score"]


def test_the_parity_endpoint_names_what_differs(book, tmp_path):
    """A night scored with another champion than the service's: parity says so, firm by firm."""
    reg, feeds, expected, champion, challenger, wh = book
    swapped = str(tmp_path / "registry")
    shutil.copytree(reg, swapped)
    lifecycle.promote(swapped, challenger, why="test", override="parity test")
    app = create_app(ServiceConfig(swapped, feeds, warehouse=wh, api_keys=None))
    firm = next(f for f in sorted(expected) if expected[f]["row"]["score_source"] == "model"
                and expected[f]["row"]["model_role"] == "champion")
    with TestClient(app) as c:
        body = c.get(f"/v1/firms/{firm}/parity", params={"as_of_date": str(AS_OF)}).json()
    assert body["equal"] is False
    assert any("model_version" in d and champion in d for d in body["differences"])


def test_response_carries_points_reasons_and_shadow(client, book):
    reg, feeds, expected, champion, challenger, _ = book
    firm = next(f for f in sorted(expected) if expected[f]["row"]["model_role"] == "champion"
                and expected[f]["row"]["score_source"] == "model")
    a = client.get(f"/v1/firms/{firm}/score", params={"as_of_date": str(AS_OF)}).json()
    assert a["model_version"] == champion and a["model_role"] == "champion"
    assert set(a["points"]) == set(catalog.NAMES)
    unclamped = a["base_points"] + sum(a["points"].values())
    assert int(math.floor(min(max(unclamped, 300), 850) + 0.5)) == a["score"]
    assert 1 <= len(a["reasons"]) <= 4 and all(r["text_zh"] and r["text_en"] for r in a["reasons"])
    assert [s["model_version"] for s in a["shadow"]] == [challenger]


def test_request_records_become_the_feed_tables_a_parquet_feed_gives():
    """core.feed_table makes the feed's table from the validated records in one Arrow
    conversion: the same table as from_pylist, nulls (absent or null), dates, whole-number
    amounts and flags included."""
    rows = handmade.records()
    rows["invoices"][0]["amount"] = 1200                 # a JSON whole number for a float column
    rows["enterprises"][1]["legal_rep_age"] = None
    del rows["enterprises"][0]["legal_rep_age"]          # an absent column is null too
    body = schemas.RecordsRequest.model_validate_json(json.dumps(
        {"enterprise_id": "E1", "as_of_date": "2026-06-30", "records": rows}, default=str))
    dumped = body.records.model_dump()
    for feed in core.FEEDS:
        table = core.feed_table(feed, getattr(body.records, feed))
        assert table.num_rows == len(rows[feed]) > 0
        assert table.equals(pa.Table.from_pylist(dumped[feed], schema=feeds.FEEDS[feed].schema),
                            check_metadata=True), feed
    assert core.feed_table("enterprises", body.records.enterprises).column(
        "legal_rep_age").null_count == 2


# ----------------------------------------------------------------------------- bad input

def _records_body(client, firm="E0000010") -> dict:
    store = client.app.state.service.feed_store
    return {"enterprise_id": firm, "as_of_date": str(AS_OF),
            "records": parity.records_json(store.group_of(firm))}


def test_raw_records_need_the_book_their_changes_are_read_against(client, book):
    """A service without feeds cannot read a firm's changes against the book at the date: raw
    records get a 503 that says what to start it with; feature values are still scored."""
    reg = book[0]
    with TestClient(create_app(ServiceConfig(reg, None, api_keys=(KEY.encode(),))),
                    headers=AUTH) as bookless:
        r = bookless.post("/v1/score/records", json=_records_body(client))
        assert r.status_code == 503
        assert "against the book at the date: start the service with --feeds" in r.json()["error"]
        assert bookless.get("/healthz").status_code == 200


def _still_serving(client):
    r = client.post("/v1/score/records", json=_records_body(client))
    assert r.status_code == 200 and r.json()["score"] >= 300


@pytest.mark.parametrize("case", [
    "malformed_json", "missing_field", "wrong_type", "unknown_column", "negative_amount",
    "unknown_feature", "missing_feature", "unparseable_date", "duplicate", "unknown_firm",
    "firm_not_in_records", "oversized", "oversized_chunked", "no_key", "wrong_key", "bearer_wrong",
    "whole_number_beyond_its_column", "whole_amount_beyond_int64", "months_history_beyond_int32"])
def test_bad_input_gets_a_clear_4xx_and_the_service_goes_on(client, beam_features, case):
    body = _records_body(client)
    feature_body = {"firms": [_feature_request(next(iter(beam_features.values())))]}
    url, headers, content = "/v1/score/records", dict(AUTH), None
    if case == "malformed_json":
        content, want, said = b'{"enterprise_id": "E1", "as_of_date": ', 400, "malformed JSON"
    elif case == "missing_field":
        del body["as_of_date"]
        want, said = 422, "body.as_of_date: Field required"
    elif case == "wrong_type":
        body["records"]["invoices"][3]["amount"] = "12.5"
        want, said = 422, "body.records.invoices.3.amount"
    elif case == "unknown_column":
        body["records"]["utility_bills"][0]["voltage"] = 220
        want, said = 422, "body.records.utility_bills.0.voltage: Extra inputs are not permitted"
    elif case == "negative_amount":
        body["records"]["invoices"][5]["amount"] = -100.0
        want, said = 422, "invoices[5]: negative amount"
    elif case == "unknown_feature":
        url, body = "/v1/score/features", feature_body
        body["firms"][0]["features"]["inv_sales_amt_2m"] = 1.0
        want, said = 422, "features.inv_sales_amt_2m: Extra inputs are not permitted"
    elif case == "missing_feature":
        url, body = "/v1/score/features", feature_body
        del body["firms"][0]["features"]["hc_last"]
        want, said = 422, "features.hc_last: Field required"
    elif case == "unparseable_date":
        body["records"]["tax_filings"][2]["filed_date"] = "2026-02-30"
        want, said = 422, "body.records.tax_filings.2.filed_date"
    elif case == "duplicate":
        body["records"]["invoices"].append(dict(body["records"]["invoices"][0]))
        want, said = 422, "duplicate invoice_id"
    elif case == "unknown_firm":
        body["records"]["loans"][0]["enterprise_id"] = "E9999999"
        want, said = 422, "loans[0]: unknown enterprise_id"
    elif case == "firm_not_in_records":
        body["enterprise_id"] = "E9999998"
        want, said = 422, "no firm 'E9999998'"
    elif case == "oversized":
        body["records"]["invoices"] *= 20
        want, said = 413, "over the limit of 2,000,000 bytes"
    elif case == "oversized_chunked":
        payload = json.dumps(body).encode() * 20
        content = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
        want, said = 413, "over the limit of 2,000,000 bytes"
    elif case == "whole_number_beyond_its_column":            # si_headcount is int32
        body["records"]["tax_filings"][1]["si_headcount"] = 10**12
        want, said = 422, ("body.records.tax_filings.1.si_headcount: Input should be less than or "
                           "equal to 2147483647")
    elif case == "whole_amount_beyond_int64":                 # read as the float it is
        body["records"]["invoices"][3]["amount"] = 10**30
        want, said = 422, "invoices[3]: implausible amount 1e+30 (beyond 1e+10)"
    elif case == "months_history_beyond_int32":
        url, body = "/v1/score/features", feature_body
        body["firms"][0]["months_history"] = 2**31
        want, said = 422, "months_history: Input should be less than or equal to 2147483647"
    elif case == "no_key":
        headers = {}
        want, said = 401, "no API key"
    elif case == "wrong_key":
        headers = {"X-API-Key": KEY[:-1] + "x"}
        want, said = 401, "wrong API key"
    else:
        headers = {"Authorization": "Bearer " + KEY + "x"}
        want, said = 401, "wrong API key"
    client.headers.clear()
    try:
        if content is not None:
            r = client.post(url, content=content,
                            headers={**headers, "content-type": "application/json"})
        else:
            r = client.post(url, json=body, headers=headers)
    finally:
        client.headers.update(AUTH)
    assert r.status_code == want, r.text
    assert said in r.json()["error"], r.json()
    if case == "negative_amount":
        assert r.json()["detail"][0]["loc"] == ["body", "records", "invoices", 5, "amount"]
    _still_serving(client)


def test_a_bearer_token_works_like_a_key(client):
    client.headers.clear()
    try:
        r = client.post("/v1/score/records", json=_records_body(client),
                        headers={"Authorization": f"Bearer {KEY}"})
    finally:
        client.headers.update(AUTH)
    assert r.status_code == 200


def test_logs_never_carry_the_records(client, caplog):
    body = _records_body(client)
    marker = "CP-SECRET-7731"
    for inv in body["records"]["invoices"]:
        inv["counterparty_id"] = marker
    bad = json.loads(json.dumps(body))
    bad["records"]["invoices"][0]["amount"] = -1.0
    with caplog.at_level(logging.DEBUG):
        assert client.post("/v1/score/records", json=body).status_code == 200
        assert client.post("/v1/score/records", json=bad).status_code == 422
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "smescore.service.shadow" in {r.name for r in caplog.records}   # logging did happen
    assert marker not in text and '"amount"' not in text


def test_probes_and_metrics(client, book):
    assert client.get("/healthz", headers={}).json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["champion"] == book[3] and ready["challengers"] == [book[4]]
    assert ready["canary"] == book[4] and ready["canary_share"] == 0.10
    text = client.get("/metrics").text
    assert re.search(r'smescore_service_request_duration_seconds_count\{endpoint="/v1/score/'
                     r'records",role="(champion|canary|rules|in_default)"\} [1-9]', text)
    assert re.search(r'smescore_service_requests_total\{endpoint="/v1/score/records",'
                     r'status="401"\} [1-9]', text)
    assert re.search(r'smescore_service_requests_total\{endpoint="/v1/score/records",'
                     r'status="422"\} [1-9]', text)
    assert f'smescore_service_model_info{{model_version="{book[4]}",role="challenger"}} 1.0' in text
    assert re.search(rf'smescore_service_shadow_scores_total\{{model_version="{book[4]}",'
                     rf'outcome="ok"\}} [1-9]', text)


def test_openapi_page_documents_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/score/features", "/v1/score/records", "/v1/firms/{enterprise_id}/score",
            "/v1/firms/{enterprise_id}/explain"} <= set(spec["paths"])
    assert "InvoicesRecord" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# ----------------------------------------------------------------------------- the explanation

@pytest.mark.parametrize("lang", ["zh", "en"])
def test_explanation_page_adds_up_in_chromium(client, book, tmp_path, lang):
    expected = book[2]
    firm = next(f for f in sorted(expected) if expected[f]["row"]["score_source"] == "model"
                and expected[f]["row"]["model_role"] == "canary")
    r = client.get(f"/v1/firms/{firm}/explain", params={"as_of_date": str(AS_OF), "lang": lang})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = tmp_path / "explain.html"
    page.write_text(r.text, encoding="utf-8")
    dom, fetched = render(str(page), str(tmp_path))
    assert fetched == []                              # self-contained: nothing asked of a network
    row = expected[firm]["row"]
    base = float(re.search(r'data-kind="base" data-value="([^"]+)"', dom).group(1))
    steps = [float(x) for x in re.findall(r'data-kind="(?:up|down)" data-points="([^"]+)"', dom)]
    total = float(re.search(r'data-kind="total" data-value="([^"]+)"', dom).group(1))
    assert base == pytest.approx(row["base_points"], abs=1e-9)
    assert len(steps) == 11                           # 10 named features + the rest grouped
    assert base + sum(steps) == pytest.approx(total, abs=1e-6)
    assert total == pytest.approx(base + sum(expected[firm]["points"].values()), abs=1e-6)
    assert int(math.floor(min(max(total, 300), 850) + 0.5)) == row["score"]
    assert f'data-score="{row["score"]}"' in dom and row["model_version"] in dom
    for reason in row["reasons"]:
        assert reason["text_zh" if lang == "zh" else "text_en"] in dom
    assert dom.count("<tr data-feature=") == len(catalog.NAMES)   # every value beside the typical


def test_the_explanation_page_from_the_nightly_tables_adds_up(client, book, tmp_path):
    """?source=nightly: the page of the published row (its attributions' points and values)."""
    expected = book[2]
    firm = next(f for f in sorted(expected) if expected[f]["row"]["score_source"] == "model"
                and expected[f]["row"]["model_role"] == "champion")
    r = client.get(f"/v1/firms/{firm}/explain", params={"source": "nightly", "lang": "en"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    live = client.get(f"/v1/firms/{firm}/explain", params={"as_of_date": str(AS_OF),
                                                            "lang": "en"})
    assert r.text == live.text                # the same digits, so the same page
    row = expected[firm]["row"]
    base = float(re.search(r'data-kind="base" data-value="([^"]+)"', r.text).group(1))
    total = float(re.search(r'data-kind="total" data-value="([^"]+)"', r.text).group(1))
    assert total == pytest.approx(base + sum(expected[firm]["points"].values()), abs=1e-6)
    assert int(math.floor(min(max(total, 300), 850) + 0.5)) == row["score"]
    assert client.get(f"/v1/firms/{firm}/explain").status_code == 422   # the feeds need a date


def test_explain_command_draws_from_the_nightly_tables(book, tmp_path):
    from smescore import cli
    reg, feeds, expected, *_, wh = book
    firm = next(f for f in sorted(expected) if expected[f]["row"]["model_role"] == "canary")
    from_tables, from_feeds = tmp_path / "t.html", tmp_path / "f.html"
    assert cli.main(["explain", "--firm", firm, "--registry", reg, "--warehouse", wh,
                     "--lang", "en", "--out", str(from_tables)]) == 0
    assert cli.main(["explain", "--firm", firm, "--as-of", str(AS_OF), "--registry", reg,
                     "--feeds", feeds, "--lang", "en", "--out", str(from_feeds)]) == 0
    page = from_tables.read_text(encoding="utf-8")
    assert page == from_feeds.read_text(encoding="utf-8")
    assert f'data-score="{expected[firm]["row"]["score"]}"' in page
    assert cli.main(["explain", "--firm", "NOPE", "--registry", reg, "--warehouse", wh]) != 0


def test_explain_command_writes_the_same_page(book, tmp_path):
    from smescore import cli
    reg, feeds, expected, *_ = book
    firm = next(f for f in sorted(expected) if expected[f]["row"]["score_source"] == "rules")
    out = tmp_path / "e.html"
    assert cli.main(["explain", "--firm", firm, "--as-of", str(AS_OF), "--registry", reg,
                     "--feeds", feeds, "--lang", "en", "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert f'data-score="{expected[firm]["row"]["score"]}"' in html
    assert "cold-start rules" in html
    png = tmp_path / "e.png"
    assert cli.main(["explain", "--firm", firm, "--as-of", str(AS_OF), "--registry", reg,
                     "--feeds", feeds, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_chinese_screenshot_draws_chinese_glyphs(tmp_path):
    """Without a Chinese font Chromium draws every character as the same box, so two different
    Chinese words give the same picture (make system-deps installs one)."""
    pictures = []
    for i, word in enumerate(("评分解释", "企业数值")):
        page, png = tmp_path / f"{i}.html", tmp_path / f"{i}.png"
        page.write_text(f'<!DOCTYPE html><html lang="zh-CN"><meta charset="utf-8"><body style='
                        f'"font-family:{explain_page.FONTS};font-size:40px">{word}</body></html>',
                        encoding="utf-8")
        commands.screenshot(str(page), str(png), "zh")
        pictures.append(png.read_bytes())
    assert pictures[0] != pictures[1]


def test_waterfall_labels_wrap_to_the_label_column():
    """The catalogue's English descriptions run to 115 characters: two lines at most, words whole,
    no line past the column (the page once cut their starts off)."""
    def width(text):
        return sum(12 if ord(c) >= 0x2E80 else 6.6 for c in text)

    for f in catalog.FEATURES:
        for name in (f.desc_en, f.desc_zh):
            lines = explain_page.label_lines(name)
            assert len(lines) <= 2 and max(map(width, lines)) <= explain_page.LABEL_W - 8
            assert (" " if " " in name else "").join(lines) == name
    assert explain_page.label_lines("Base points") == ["Base points"]


# ----------------------------------------------------------------------------- live: batching, swap

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live(book, tmp_path):
    """uvicorn on a port over a copy of the registry (the test promotes in it)."""
    reg = str(tmp_path / "registry")
    shutil.copytree(book[0], reg)
    cfg = ServiceConfig(reg, None, api_keys=(KEY.encode(),), watch_interval_s=0.2)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    yield url, reg
    server.should_exit = True
    thread.join(timeout=30)


def test_promote_during_load_swaps_models_with_no_failed_request(live, book, beam_features):
    url, reg = live
    _, _, expected, champion, challenger, _ = book
    firms = [f for f in sorted(expected) if expected[f]["row"]["score_source"] == "model"][:64]
    bodies = [{"firms": [_feature_request(beam_features[f])]} for f in firms]
    results = []        # (started, finished, status, model_version, model_role)
    promoted_at = []

    async def worker(k, stop):
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as c:
            i = k
            while not stop.is_set():
                start = time.monotonic()
                r = await c.post("/v1/score/features", json=bodies[i % len(bodies)])
                a = r.json()["scores"][0] if r.status_code == 200 else {}
                results.append((start, time.monotonic(), r.status_code, a.get("model_version"),
                                a.get("model_role")))
                i += 8

    async def main():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker(k, stop)) for k in range(8)]
        while len(results) < 24:
            await asyncio.sleep(0.2)
        promoted_at.append(time.monotonic())
        await asyncio.to_thread(lifecycle.promote, reg, challenger, why="test",
                                override="hot-swap test")
        while True:
            await asyncio.sleep(0.5)
            # the challenger answers for the canary firms before the swap too: as the champion only after
            if any(v == challenger and role == "champion" and s > promoted_at[0]
                   for s, _, _, v, role in results[-8:]):
                break
            assert time.monotonic() - promoted_at[0] < 120, "the swap never happened"
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert [r for r in results if r[2] != 200] == []
    before = [v for s, f, _, v, _ in results if f < promoted_at[0]]
    assert before and set(before) <= {champion, challenger}     # canary firms: challenger's
    last = results[-20:]
    assert {(v, role) for *_, v, role in last} == {(challenger, "champion")}
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["champion"] == challenger and ready["challengers"] == []
    metrics = httpx.get(f"{url}/metrics").text
    assert 'smescore_service_model_swaps_total{outcome="swapped"} 1.0' in metrics
    rows = float(re.search(r"smescore_service_batch_rows_sum (\S+)", metrics).group(1))
    calls = float(re.search(r"smescore_service_batch_rows_count (\S+)", metrics).group(1))
    assert rows / calls > 1.5          # 8 clients: requests shared model calls


def test_the_load_generator_reads_the_services_answers_as_httpx_does(live, book, beam_features):
    from bench import serve_load
    url, _ = live
    _, _, expected, champion, challenger, _ = book
    firms = [f for f in sorted(expected) if expected[f]["row"]["score_source"] == "model"][:6]
    bodies = [{"firms": [_feature_request(beam_features[f])]} for f in firms]

    async def one(key):
        c = serve_load.Connection("127.0.0.1", int(url.rsplit(":", 1)[1]), key)
        await c.open()
        try:
            return [await c.send(c.request("/v1/score/features", json.dumps(b).encode()))
                    for b in bodies[:2]]            # two on one keep-alive connection
        finally:
            await c.close()
    got = asyncio.run(one(KEY))
    for (status, answer), body in zip(got, bodies):
        want = httpx.post(f"{url}/v1/score/features", json=body, headers=AUTH)
        assert (status, answer) == (200, want.content)
    assert [s for s, _ in asyncio.run(one("wrong-key"))] == [401, 401]
    r = asyncio.run(serve_load.load(url, KEY, "/v1/score/features", bodies, 3, 1.0))
    assert r["requests"] >= 3 and r["statuses"] == {"200": r["requests"]}
    assert {v for *_, v, _ in r["versions"]} <= {champion, challenger}
    assert r["load_cpu_ms_per_request"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--feeds-dataset", "sme_feeds"], "--bq-project and --risk-dataset are needed"),
    (["--bq-project", "my-risk-project", "--risk-dataset", "risk`; DROP"], "not a valid name"),
    (["--feeds", "f", "--bq-project", "my-risk-project", "--feeds-dataset", "sme_feeds",
      "--risk-dataset", "sme_risk", "--no-auth"], "from a folder or from BigQuery, not both"),
    (["--warehouse", "/nonexistent/risk.duckdb", "--no-auth"], "no warehouse file"),
])
def test_serve_refuses_incomplete_or_unsafe_table_flags(argv, message, capsys, tmp_path):
    from smescore import cli
    assert cli.main(["serve", "--registry", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
