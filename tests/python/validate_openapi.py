#!/usr/bin/env python3
"""Validates an OpenAPI 3 document (3.0 or 3.1, as its `openapi` field says)
with openapi-spec-validator.

    validate_openapi.py FILE

Prints the number of paths and operations and exits 0 when the document is
valid; otherwise prints the validator's message on stderr and exits 1.
Run by tests/tests/e2e/generic_clients.rs against fleetd's /openapi.json.
"""

import json
import sys

from openapi_spec_validator import validate

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def main():
    if len(sys.argv) != 2:
        print("usage: validate_openapi.py FILE", file=sys.stderr)
        return 2
    path = sys.argv[1]
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except (OSError, ValueError) as error:
        print(f"validate_openapi: cannot read {path}: {error}", file=sys.stderr)
        return 1
    if not isinstance(document, dict):
        print(f"validate_openapi: {path} is not a JSON object", file=sys.stderr)
        return 1
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        print(
            f"validate_openapi: {path}: `openapi` is {version!r}, not an OpenAPI 3 version",
            file=sys.stderr,
        )
        return 1
    try:
        # The validator class follows the document's `openapi` field.
        validate(document)
    except Exception as error:  # noqa: BLE001 - every validator error is a failure
        print(f"validate_openapi: {path} is not valid OpenAPI {version}:", file=sys.stderr)
        print(str(error), file=sys.stderr)
        return 1
    paths = document.get("paths") or {}
    operations = sum(
        1
        for item in paths.values()
        if isinstance(item, dict)
        for method in item
        if method in METHODS
    )
    print(f"valid OpenAPI {version}: {len(paths)} paths, {operations} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
