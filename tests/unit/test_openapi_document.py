"""/openapi.json as clients and fuzzers read it: every JSON request body and every error answer
has an example that its own schema accepts (and that the app's models accept), and every link
names an operation that exists with the parameters it takes."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from glimpse.api.errors import ErrorBody
from glimpse.app import create_app
from glimpse.config import Settings

DOCUMENT: dict[str, Any] = create_app(Settings(secret_key="x")).openapi()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    # The components travel with the schema, so that its $refs resolve.
    return {**schema, "components": DOCUMENT["components"]}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    ]


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, _resolve(schema), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("method,path,operation", _operations(), ids=lambda v: str(v)[:40])
def test_every_json_body_and_error_has_an_example_its_schema_accepts(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        schema = body["schema"]
        resolved = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        examples = resolved.get("examples") or []
        assert examples, f"{method} {path}: no example of its body"
        for example in examples:
            _validate(example, schema)
    for status, response in operation["responses"].items():
        if not status.startswith(("4", "5")):
            continue
        content = response["content"]["application/json"]
        assert "example" in content, f"{method} {path} {status}: no example"
        _validate(content["example"], content["schema"])
        if path != "/readyz":  # (its 503 is the readiness report)
            ErrorBody.model_validate(content["example"])


def test_links_name_operations_that_exist_with_their_parameters() -> None:
    seen = 0
    for method, path, operation in _operations():
        for response in operation["responses"].values():
            for name, link in response.get("links", {}).items():
                pointer = link["operationRef"].removeprefix("#/paths/")
                target_path, _, target_method = pointer.rpartition("/")
                target_path = target_path.replace("~1", "/").replace("~0", "~")
                target = DOCUMENT["paths"][target_path][target_method]
                names = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == names, (method, path, name)
                field = link["parameters"][next(iter(names))].removeprefix("$response.body#/")
                schema = response["content"]["application/json"]["schema"]
                model = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
                assert field in model["properties"], (method, path, name)
                seen += 1
    assert seen >= 5
