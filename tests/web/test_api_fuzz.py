"""Property-based tests of the whole JSON API, driven by its own OpenAPI document (Schemathesis on Hypothesis):
requests that fit the schema and requests that break it, against the real app on a real SQLite store. Whatever
a client sends, the answer is never a 5xx; a request that breaks the schema is refused with a 4xx. The run is
bounded (a fixed number of examples per operation) and derandomized, so it is the same run every time."""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection

from museforge.families.serving import clear_model_cache
from museforge.web import create_app
from museforge.web.security import CSRF_HEADER
from web.conftest import api_token, make_settings

pytestmark = pytest.mark.xdist_group("api-fuzz")  # one worker, one app for the module
EXAMPLES = 20  # per operation and generation mode


def bounded(examples: int = EXAMPLES):
    """A fixed number of examples, derandomized: the same run every time, in bounded time."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, models_folder):
    """The schema of a live app (its lifespan runs until the module's tests end), reached through the
    in-process ASGI client Schemathesis calls it with; every case comes from the same address with a new
    session, and at most three jobs are accepted from it, so generation stays cheap."""
    clear_model_cache()
    var = tmp_path_factory.mktemp("fuzz") / "var"
    limits = {"rate_limit_jobs": 2, "rate_limit_address_jobs": 3, "rate_limit_window_s": 3600}
    app = create_app(make_settings(var, models_folder, **limits))
    yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    asgi.shutdown_lifespans()


def call(case):
    """Send a case with the session's CSRF token, so writes get past the CSRF check to the validation behind
    it; the answer must not be a server error."""
    with asgi.get_client(case.operation.app) as client:
        token = client.get("/api/v1/auth/session").json()["csrf_token"]
        response = case.call(session=client, headers={CSRF_HEADER: token})
    assert response.status_code < 500, (
        f"{response.status_code} {response.text[:500]}\n{case.as_curl_command()}"
    )
    return response


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_makes_a_server_error(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.body or any(operation.query)):
            continue  # nothing to break: any string is a valid path segment

        @bounded()
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            response = call(case)
            if mode is GenerationMode.NEGATIVE:
                case.validate_response(response, checks=[negative_data_rejection])

        run()


NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e999")  # Python's JSON parser reads these as floats


def json_body_fields(spec: dict, operation) -> list[str]:
    """The top-level fields of an operation's JSON body, from the OpenAPI document."""
    body = spec["paths"][operation.path][operation.method.lower()]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return sorted(schema["properties"])


def test_a_non_finite_number_in_any_json_field_is_a_422_naming_it(api_schema):
    """NaN, Infinity and overflowing numbers are not JSON, but Python's parser reads them: put one in any
    field of any JSON body and the answer is a 422 that names the field (never a 500 from echoing it)."""
    with asgi.get_client(api_schema.app) as client:
        spec = client.get("/api/v1/openapi.json").json()
    operations = [r.ok() for r in api_schema.get_all_operations()]
    json_ops = [op for op in operations if any(b.media_type == "application/json" for b in op.body)]
    assert {op.label for op in json_ops} >= {"POST /api/v1/jobs", "POST /api/v1/auth/signup"}
    for operation in json_ops:
        fields = json_body_fields(spec, operation)

        @bounded(10)
        @given(
            case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            field=st.sampled_from(fields),
            token=st.sampled_from(NON_FINITE),
        )
        def run(case, field, token):
            body = dict(case.body) if isinstance(case.body, dict) else {}
            body[field] = "__non_finite__"
            raw = json.dumps(body).replace('"__non_finite__"', token)
            with asgi.get_client(api_schema.app) as client:
                headers = {CSRF_HEADER: client.get("/api/v1/auth/session").json()["csrf_token"]}
                headers["content-type"] = "application/json"
                url = case.formatted_path
                r = client.request(case.method, url, data=raw, headers=headers)
            assert r.status_code == 422, f"{case.method} {url} {raw}: {r.status_code} {r.text[:300]}"
            assert any(e["loc"][:2] == ["body", field] for e in r.json()["errors"]), r.text
            assert field in r.json()["detail"], r.text

        run()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", '"nan"', '"inf"', '"1e999"'])
def test_temperature_must_be_finite(client, value):
    """The issue's cases: NaN was a 500, Infinity reset the connection, "nan" got "should be ≤ 3"."""
    r = client.post(
        "/api/v1/jobs",
        content=f'{{"temperature": {value}}}',
        headers={**api_token(client), "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "temperature: Input should be a finite number"
    assert client.get("/api/v1/jobs").json()["jobs"] == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_wait_must_be_finite(client, value):
    r = client.get("/api/v1/jobs/nosuchjob", params={"wait": value})
    assert r.status_code == 422 and r.json()["detail"] == "wait: Input should be a finite number"
