#!/usr/bin/env python3
"""scripts/openapi-json.py IN.yaml OUT.json — the JSON form of the OpenAPI document.

Run by the build (CMakeLists.txt) so that chatd serves docs/openapi.yaml as
GET /api/openapi.json. Keys keep the document's order; the output is compact
and ends with a newline. Fails (exit 1) when the YAML does not parse or is
not an OpenAPI 3.x document.
"""

import json
import os
import sys

import yaml


def main(argv):
    if len(argv) != 3:
        print("usage: openapi-json.py IN.yaml OUT.json", file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    with open(src, encoding="utf-8") as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            print(f"openapi-json: {src}: {e}", file=sys.stderr)
            return 1
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3."):
        print(f"openapi-json: {src}: not an OpenAPI 3.x document", file=sys.stderr)
        return 1
    # YAML may hold dates and other non-JSON scalars: refuse them rather than guess.
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        print(f"openapi-json: {src}: not representable as JSON: {e}", file=sys.stderr)
        return 1
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
