"""The site's build hook (mkdocs.yml `hooks:`), and the HTTP API reference renderer.

- `on_config` drops from the nav the pages listed in `PENDING_PAGES` while their
  file does not exist yet, so the strict build passes with what is committed and
  picks each page up as soon as it lands. Any other missing page still fails.
- `on_files` renders `reference/http.md` from the service's OpenAPI document
  (`airia_server.api.openapi.openapi_document`) at every build, so the page can
  never go stale; nothing is written into docs/.

`render_http_reference(document)` is plain Python (no MkDocs import), so the
tests can render and check the page without the docs tools installed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

HTTP_REFERENCE = "reference/http.md"
PENDING_PAGES = frozenset({"console.md", "reliability.md"})
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
REF_PREFIX = "#/components/schemas/"

log = logging.getLogger("mkdocs.hooks.gen_reference")


# -- MkDocs events -----------------------------------------------------------------------


def on_config(config: Any) -> Any:
    docs_dir = Path(config["docs_dir"])
    if config["nav"]:
        config["nav"] = _prune(config["nav"], docs_dir)
    src = Path(config["config_file_path"]).parent / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    from airia_server.api.openapi import openapi_document

    files.append(
        File.generated(config, HTTP_REFERENCE, content=render_http_reference(openapi_document()))
    )
    return files


def _prune(nav: list[Any], docs_dir: Path) -> list[Any]:
    kept: list[Any] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            kept.append({next(iter(item)): _prune(value, docs_dir)})
            continue
        if value in PENDING_PAGES and not (docs_dir / value).exists():
            log.info("nav: %s is not written yet; left out", value)
            continue
        kept.append(item)
    return kept


# -- rendering -------------------------------------------------------------------------


def render_http_reference(document: dict[str, Any]) -> str:
    """The OpenAPI document as Markdown: every operation, then every schema."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    info = document.get("info", {})
    out = [
        "# HTTP API reference",
        "",
        "<!-- Generated at build time by docs/gen_reference.py from "
        "airia_server.api.openapi.openapi_document(); do not edit. -->",
        "",
        f"{info.get('title', 'API')} {info.get('version', '')}, "
        f"OpenAPI {document.get('openapi', '')}. The running server serves the same "
        "document at `/openapi.json` and an interactive explorer at `/docs`. "
        "For the rules behind these operations see [the HTTP API](../api.md).",
        "",
    ]
    if info.get("description"):
        out += [_oneline(info["description"]), ""]
    out += _security(document)

    by_tag: dict[str, list[tuple[str, str, dict[str, Any], list[dict[str, Any]]]]] = {}
    for path, item in document.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            tag = (op.get("tags") or ["Other"])[0]
            by_tag.setdefault(tag, []).append((method, path, op, shared))

    out += ["## Operations", ""]
    out += ["| method | path | operation |", "|---|---|---|"]
    for ops in by_tag.values():
        for method, path, op, _ in ops:
            out.append(
                f"| `{method.upper()}` | [`{path}`](#{_op_anchor(op, method, path)}) "
                f"| {_cell(op.get('summary', ''))} |"
            )
    out.append("")

    for tag, ops in by_tag.items():
        out += [f"## {tag}", ""]
        for method, path, op, shared in ops:
            out += _operation(method, path, op, shared, schemas)

    out += ["## Schemas", ""]
    for name, schema in schemas.items():
        out += _schema(name, schema, schemas)
    return "\n".join(out).rstrip() + "\n"


def _security(document: dict[str, Any]) -> list[str]:
    schemes = document.get("components", {}).get("securitySchemes", {})
    if not schemes:
        return []
    out = ["## Authentication", "", "| scheme | how |", "|---|---|"]
    for name, scheme in schemes.items():
        if scheme.get("type") == "apiKey":
            how = f"`{scheme.get('name')}` {scheme.get('in')}"
        elif scheme.get("type") == "http":
            how = f"`Authorization: {scheme.get('scheme', '').title()} <token>`"
            if scheme.get("bearerFormat"):
                how += f" ({scheme['bearerFormat']})"
        else:
            how = scheme.get("type", "")
        out.append(f"| {name} | {how} |")
    return [*out, ""]


def _operation(
    method: str,
    path: str,
    op: dict[str, Any],
    shared: list[dict[str, Any]],
    schemas: dict[str, Any],
) -> list[str]:
    anchor = _op_anchor(op, method, path)
    out = [f"### `{method.upper()} {path}` {{#{anchor}}}", ""]
    if op.get("summary"):
        out += [_oneline(op["summary"]), ""]
    if op.get("description"):
        out += [op["description"].strip(), ""]
    facts = []
    if op.get("operationId"):
        facts.append(f"Operation id: `{op['operationId']}`.")
    if "security" in op:
        names = sorted({name for req in op["security"] for name in req})
        facts.append("Authentication: " + (" or ".join(names) if names else "none") + ".")
    if op.get("deprecated"):
        facts.append("**Deprecated.**")
    if facts:
        out += [" ".join(facts), ""]

    params = {(p.get("in"), p.get("name")): p for p in shared}
    params.update({(p.get("in"), p.get("name")): p for p in op.get("parameters", [])})
    if params:
        out += [
            "**Parameters**",
            "",
            "| name | in | type | required | description |",
            "|---|---|---|---|---|",
        ]
        for p in params.values():
            out.append(
                f"| `{p.get('name')}` | {p.get('in')} | {_type(p.get('schema', {}), schemas)} "
                f"| {'yes' if p.get('required') else 'no'} "
                f"| {_cell(_describe(p.get('schema', {}), p.get('description', '')))} |"
            )
        out.append("")

    body = op.get("requestBody")
    if body:
        out += ["**Request body**" + (" (required)" if body.get("required") else ""), ""]
        out += ["| media type | schema |", "|---|---|"]
        for media, content in body.get("content", {}).items():
            out.append(f"| `{media}` | {_type(content.get('schema', {}), schemas)} |")
        out.append("")

    out += [
        "**Responses**",
        "",
        "| status | description | media type | schema |",
        "|---|---|---|---|",
    ]
    for status, response in op.get("responses", {}).items():
        content = response.get("content") or {"": {}}
        for media, c in content.items():
            schema = _type(c["schema"], schemas) if "schema" in c else ""
            out.append(
                f"| {status} | {_cell(response.get('description', ''))} "
                f"| {f'`{media}`' if media else ''} | {schema} |"
            )
    return [*out, ""]


def _schema(name: str, schema: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    out = [f"### {name} {{#{_schema_anchor(name)}}}", ""]
    if schema.get("description"):
        out += [_oneline(schema["description"]), ""]
    props = schema.get("properties")
    if not props:
        return [*out, f"Type: {_type(schema, schemas)}.", ""]
    required = set(schema.get("required", []))
    out += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, sub in props.items():
        out.append(
            f"| `{field}` | {_type(sub, schemas)} | {'yes' if field in required else 'no'} "
            f"| {_cell(_describe(sub))} |"
        )
    return [*out, ""]


def _describe(schema: dict[str, Any], description: str = "") -> str:
    """A field's or parameter's description, with its default and an example."""
    parts = [description] if description else []
    for s in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        if s.get("description") and s["description"] not in parts:
            parts.append(s["description"])
    if schema.get("default") is not None:
        parts.append(f"Default `{schema['default']}`")
    if schema.get("examples"):
        parts.append(f"Example `{schema['examples'][0]}`")
    return " ".join(p if p.rstrip().endswith((".", ")", ":")) else p + "." for p in parts)


def _type(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    """A schema as a short, linked type expression: `string`, [Participant](#...)[], ..."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(REF_PREFIX)
        if name in schemas:
            return f"[{name}](#{_schema_anchor(name)})"
        log.info("openapi: %s is referenced but not among components.schemas", name)
        return f"{name} (not described)"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type(s, schemas) for s in schema[key])
    if "allOf" in schema:
        return " and ".join(_type(s, schemas) for s in schema["allOf"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(_type({**schema, "type": k}, schemas) for k in kind)
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if kind == "array":
        return _type(schema.get("items", {}), schemas) + "[]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {_type(schema['additionalProperties'], schemas)}"
    if kind is None:
        return "any"
    return f"`{kind}` ({schema['format']})" if schema.get("format") else f"`{kind}`"


def _op_anchor(op: dict[str, Any], method: str, path: str) -> str:
    ident = op.get("operationId") or f"{method}-{path}"
    return "op-" + "".join(c if c.isalnum() else "-" for c in ident).strip("-")


def _schema_anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name)


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _oneline(text).replace("|", "\\|")
