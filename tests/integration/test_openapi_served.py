"""GET /api/openapi.json serves docs/openapi.yaml as JSON, and the web paths of
the document (/, /favicon.ico, /app/{asset}) are served."""

import yaml

from chatlib import json_body
from openapi_check import SPEC_PATH


def test_openapi_json_is_the_yaml_document(api):
    """The served JSON equals yaml.safe_load(docs/openapi.yaml) exactly: same
    keys, values and types (an id maximum of 2^63-1 stays exact)."""
    served = json_body(api.req("GET", "/api/openapi.json"), 200)
    assert served == yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def test_web_paths_are_served(api):
    """The document's web paths answer as it says (openapi_check checks each)."""
    r = api.req("GET", "/")
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Type"].split(";")[0] == "text/html"
    r = api.req("GET", "/app/no-such-asset-of-chatd.js")
    assert r.status_code == 404, r.status_code
