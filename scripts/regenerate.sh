#!/usr/bin/env bash
# Rewrites every generated file of the repository from its source, in one command:
#
#   docs/config.schema.json        the configuration's JSON Schema   (src/config and the settings types)
#   docs/configuration.md          its "Reference" section           (the same schema)
#   docs/openapi.yaml              the JSON gateway's OpenAPI 3.1     (proto/ and its google.api.http rules)
#
# Run it after changing a configuration key, a doc comment on one, a range, or proto/; commit
# what it changes. The test suite fails, naming this script, while any of them is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_GENERATED=1 cargo test --locked --test suite --quiet generated::
git status --short -- docs/config.schema.json docs/configuration.md docs/openapi.yaml
