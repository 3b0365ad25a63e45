"""Output schemas: Draft-07 JSON Schemas whose `$ref`s resolve inside the schema itself.

Left to itself, jsonschema fetches any `$ref` it does not hold with urllib, outside the guarded
client of `kennel.netpolicy`: a worker's schema could make the server call any address, internal
ones included. Here every validator gets a registry that holds only the standard metaschemas and
retrieves nothing, and `problem_of` refuses up front a schema that needs anything more.

jsonschema (with referencing) adds about 2 MiB to a process, and only workers with an output
schema need it: it is imported when the first schema is checked or used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from kennel import jsonvalues
from kennel.models import JSONObject

if TYPE_CHECKING:
    from jsonschema import Draft7Validator


def problem_of(schema: JSONObject) -> str | None:
    """Why `schema` can't be a worker's output schema, as a phrase without its subject
    ("is not ..."), or None when it can."""
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import SchemaError

    problem = jsonvalues.problem_of(schema)
    if problem is not None:
        return problem
    try:
        Draft7Validator.check_schema(schema)
    except SchemaError as error:
        return f"is not a valid JSON Schema: {error.message}"
    if schema.get("type") != "object":
        return 'must describe an object ("type": "object")'
    return _unresolvable_reference(schema)


def validator_for(schema: JSONObject) -> Draft7Validator:
    """A validator that resolves references only inside `schema` (and the metaschemas)."""
    from jsonschema import Draft7Validator
    from jsonschema_specifications import REGISTRY as METASCHEMAS

    return Draft7Validator(schema, registry=METASCHEMAS)


def for_model(schema: JSONObject) -> JSONObject:
    """`schema` as the model provider is shown it: each `$ref` rewritten to `#/$defs/...`, the
    only form pydantic's schema tools read (a Draft-07 `#/definitions/...` crashes them), and a
    `$ref` back into a subschema it sits in shown as `{}` (they refuse recursion). Answers are
    still checked against `schema` itself, recursion included. Call `problem_of` first."""
    from jsonschema_specifications import REGISTRY as METASCHEMAS
    from referencing.jsonschema import DRAFT7

    resolver = METASCHEMAS.resolver_with_root(DRAFT7.create_resource(schema))
    bases = _base_uris(schema)
    names: dict[int, str] = {}
    defs: dict[str, Any] = {}
    inside: set[int] = set()

    def copy(value: Any) -> Any:
        if isinstance(value, list):
            return [copy(item) for item in value]
        if not isinstance(value, dict):
            return value
        reference = value.get("$ref")
        if not isinstance(reference, str):
            inside.add(id(value))
            skipped = ("$id", "$defs", "definitions")
            copied = {key: copy(item) for key, item in value.items() if key not in skipped}
            inside.discard(id(value))
            return copied
        target = resolver.lookup(urljoin(bases[id(value)], reference)).contents
        if id(target) not in bases or id(target) in inside:  # a metaschema, or recursion
            return {}
        if id(target) not in names:
            names[id(target)] = f"ref{len(names)}"
            defs[names[id(target)]] = copy(target)
        return {"$ref": f"#/$defs/{names[id(target)]}"}

    shown: JSONObject = copy(schema)
    if defs:
        shown["$defs"] = defs
    return shown


def _base_uris(schema: JSONObject) -> dict[int, str]:
    """The base URI of every object in `schema`, by `id()`: Draft 07 moves it with each `$id`
    (one beside a `$ref` is ignored)."""
    bases: dict[int, str] = {}
    pending: list[tuple[Any, str]] = [(schema, "")]
    while pending:
        value, base = pending.pop()
        if isinstance(value, dict):
            declared = value.get("$id")
            if isinstance(declared, str) and "$ref" not in value:
                base = urljoin(base, declared)
            bases[id(value)] = base
            pending.extend((item, base) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, base) for item in value)
    return bases


def _unresolvable_reference(schema: JSONObject) -> str | None:
    """The first `$ref` that points outside the schema, as a phrase; every `$ref` is followed,
    those in `definitions` that nothing uses included, and each subschema is visited once."""
    from jsonschema_specifications import REGISTRY as METASCHEMAS
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT7

    root = DRAFT7.create_resource(schema)
    pending = [(METASCHEMAS.resolver_with_root(root), root)]
    seen: set[int] = set()
    while pending:
        resolver, resource = pending.pop()
        contents = resource.contents
        if id(contents) in seen:
            continue
        seen.add(id(contents))
        reference = contents.get("$ref") if isinstance(contents, dict) else None
        if isinstance(reference, str):
            try:
                resolved = resolver.lookup(reference)
                if _leads_back(resolved, {id(contents)}):
                    return f'has a "$ref" to {reference!r} that only leads to other "$ref"s'
            except Unresolvable:
                return (
                    f'has a "$ref" to {reference!r}, which is not inside it: references must '
                    "resolve inside the schema (#/definitions/..., or an $id it declares)"
                )
            pending.append((resolved.resolver, DRAFT7.create_resource(resolved.contents)))
        for subresource in resource.subresources():
            pending.append((resolver.in_subresource(subresource), subresource))
    return None


def _leads_back(resolved: Any, chain: set[int]) -> bool:
    """Whether a chain of schemas that are nothing but a `$ref` loops (jsonschema would follow it
    until Python's stack runs out)."""
    while isinstance(resolved.contents, dict) and isinstance(resolved.contents.get("$ref"), str):
        if id(resolved.contents) in chain:
            return True
        chain.add(id(resolved.contents))
        resolved = resolved.resolver.lookup(resolved.contents["$ref"])
    return False
