"""The OpenAPI 3.1 document of the route table, and a plain HTML page listing it (no script,
no CDN). Built on first request from the same `Endpoint`s the router mounts, then cached."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from control.api.endpoints import Endpoint
from control.contracts.api import ErrorBody

_PARAM = re.compile(r"\{(\w+)\}")
_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "Bad JSON, cursor or header", "401": "Missing or invalid API key",
    "403": "The key lacks the scope", "404": "No such record", "409": "Version conflict",
    "422": "Validation failed (`field` names the input)", "503": "Store unavailable",
}


def _schema(model: type[BaseModel], schemas: dict[str, Any], mode: str) -> dict[str, str]:
    name = model.__name__
    schema = model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    for def_name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(def_name, definition)
    schemas[name] = schema
    return {"$ref": _REF.format(model=name)}


def _operation(ep: Endpoint, prefix: str, schemas: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(ep.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in ep.query
    ]
    handler = getattr(ep.handler, "__name__", "op").strip("_")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{ep.method}{prefix}{ep.path}").strip("_").lower()
    op: dict[str, Any] = {
        "operationId": f"{slug}_{handler}",
        "summary": ep.summary,
        "tags": [ep.tag],
        "parameters": params,
    }
    if ep.scope is not None:
        op["security"] = [{"bearer": [ep.scope]}]
        op["description"] = f"Scope: `{ep.scope}` (or `admin`)."
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _schema(ep.body, schemas, "validation")}}}
    ok: dict[str, Any] = {"description": ep.summary}
    if ep.response is not None:
        ok["content"] = {
            "application/json": {"schema": _schema(ep.response, schemas, "serialization")}}
    responses: dict[str, Any] = {str(ep.status): ok}
    error_ref = _schema(ErrorBody, schemas, "serialization")
    for code, text in _ERRORS.items():
        if code in ("401", "403") and ep.scope is None:
            continue
        if code in ("409", "422", "400") and ep.body is None and not ep.query:
            continue
        responses[code] = {"description": text,
                           "content": {"application/json": {"schema": error_ref}}}
    op["responses"] = responses
    return op


def build(endpoints: Sequence[Endpoint], prefixes: Sequence[str], version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for prefix in prefixes:
        for ep in endpoints:
            paths.setdefault(prefix + ep.path, {})[ep.method.lower()] = _operation(
                ep, prefix, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sdpbx management API", "version": version,
                 "description": "The same routes are served under " + " and ".join(
                     f"`{p}`" for p in prefixes) + "."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API key: `sdpbx apikey create --scope read,write`"}},
        },
    }


def render_html(document: dict[str, Any]) -> str:
    """A static page: each path and method with its summary, parameters and schemas' names."""
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = str(body.get("schema", {}).get("$ref", "")).rsplit("/", 1)[-1]
            scope = op.get("security", [{}])[0].get("bearer", ["-"])[0] if "security" in op \
                else "-"
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(scope)}</td><td>{html.escape(ref)}</td></tr>")
    schemas = "".join(
        f"<li id='{html.escape(name)}'><code>{html.escape(name)}</code>: "
        f"{html.escape(', '.join(schema.get('properties', {})))}</li>"
        for name, schema in document["components"]["schemas"].items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(document['info']['title'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;"
        "text-align:left;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>{html.escape(document['info']['title'])} {html.escape(document['info']['version'])}"
        "</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. "
        "Authenticate with <code>Authorization: Bearer &lt;API key&gt;</code>.</p>"
        "<table><tr><th>method</th><th>path</th><th>summary</th><th>scope</th><th>body</th></tr>"
        + "".join(rows) + "</table><h2>Schemas</h2><ul>" + schemas + "</ul></body></html>"
    )
