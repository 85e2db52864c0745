"""Schemathesis hooks for deploy/local/api-check.sh: what a fuzzer needs that the document
states but cannot generate. Each rule reads the document, so a new route needs nothing here.

- Credentials: every request carries the current API key (`X-API-Key`), `POST /api/keys/generate`
  the admin token. A successful `POST /api/keys/rotate` answers a new key, which every later
  request uses: rotation is fuzzed in the same run as every other route, on the run's own
  organisation.
- Values only the API issues (a parameter whose schema has `x-issued-as: <member>`, such as the
  inbox `cursor`): a positive case sends one that an earlier answer of the same operation carried
  in `<member>`, or leaves the parameter out until one has been seen. Negative cases are sent as
  generated.
- Webhook URLs depend on the outside world (DNS; no network here): in a positive case, a URL the
  `WebhookUrl` schema admits has its host replaced by 127.0.0.1 (still admitted by the schema),
  which the service accepts as it runs with private targets allowed.
"""

import os
import re
import urllib.parse

import schemathesis

KEY = {"api": os.environ["TRIGGERS_API_CHECK_KEY"]}
ADMIN_TOKEN = os.environ["TRIGGERS_API_CHECK_ADMIN_TOKEN"]
ISSUED = {}  # (operation label, member) -> values seen in answers


@schemathesis.auth(refresh_interval=None, retry_on=[])
class Credentials:
    def get(self, case, ctx):
        return KEY["api"]

    def set(self, case, data, ctx):
        if case.operation.path == "/api/keys/generate":
            case.headers = {**(case.headers or {}), "X-Admin-Token": ADMIN_TOKEN}
        else:
            case.headers = {**(case.headers or {}), "X-API-Key": data}


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _issued_params(case):
    """(parameter name, response member) for each query parameter marked `x-issued-as`."""
    for param in case.operation.definition.raw.get("parameters", []):
        member = param.get("schema", {}).get("x-issued-as")
        if param.get("in") == "query" and member:
            yield param["name"], member


_URL = {}


def _url_pattern(case):
    if "pattern" not in _URL:
        schema = case.operation.schema.raw_schema["components"]["schemas"]["WebhookUrl"]
        _URL["pattern"] = re.compile(schema["pattern"])
    return _URL["pattern"]


def _local(url):
    parts = urllib.parse.urlsplit(url)
    netloc = "127.0.0.1" + (f":{parts.port}" if parts.port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@schemathesis.hook
def before_call(context, case, **kwargs):
    if not _positive(case):
        return
    for name, member in _issued_params(case):
        if case.query and name in case.query:
            seen = sorted(ISSUED.get((case.operation.label, member), ()))
            if seen:
                case.query[name] = seen[len(str(case.query[name])) % len(seen)]
            else:
                del case.query[name]
    if isinstance(case.body, dict):
        pattern = _url_pattern(case)
        for field, value in case.body.items():
            if isinstance(value, str) and pattern.fullmatch(value):
                local = _local(value)
                if pattern.fullmatch(local):
                    case.body[field] = local


@schemathesis.hook
def after_call(context, case, response):
    if response.status_code >= 300:
        return
    try:
        body = response.json()
    except ValueError:
        return
    if case.operation.path == "/api/keys/rotate" and isinstance(body, dict) and body.get("api_key"):
        KEY["api"] = body["api_key"]
    for _, member in _issued_params(case):
        if isinstance(body, dict) and isinstance(body.get(member), str):
            ISSUED.setdefault((case.operation.label, member), set()).add(body[member])
