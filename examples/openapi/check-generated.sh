#!/usr/bin/env bash
# Regenerates client.gen.go with the oapi-codegen version pinned in the
# examples module's go.mod and fails if the result differs from the file
# in the tree, which means that openapi.yaml, oapi-codegen.yaml or the pinned
# version changed without the file being regenerated. On failure the
# regenerated file is left in place, ready to review and commit.
set -euo pipefail
cd "$(dirname "$0")"

saved=$(mktemp)
trap 'rm -f "$saved"' EXIT
cp client.gen.go "$saved"

(cd .. && go generate ./openapi/)

if ! cmp -s "$saved" client.gen.go; then
  echo "examples/openapi/client.gen.go is out of date; the regenerated file differs:" >&2
  diff -u "$saved" client.gen.go | sed "1s|$saved|client.gen.go (before)|" >&2 || true
  echo "review the regenerated file and commit it" >&2
  exit 1
fi
echo "examples/openapi/client.gen.go is up to date"
