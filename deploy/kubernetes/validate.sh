#!/usr/bin/env bash
# Validates the manifests here against the Kubernetes API's JSON schemas (strict: unknown
# fields are errors) with the `kubernetes-validate` package from PyPI, for the oldest and the
# newest Kubernetes version it pins that synfed supports (Indexed Jobs with
# backoffLimitPerIndex: 1.29+). Also checks that the validator rejects a broken manifest, so
# a pass means something. Installs the validator into a virtual environment (VENV, default
# /tmp/synfed-kubernetes-validate); exit status 2 when it cannot be installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-/tmp/synfed-kubernetes-validate}
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
  python3 -m venv "$venv" > /dev/null 2>&1 && "$venv/bin/pip" install -q kubernetes-validate > /dev/null 2>&1 \
    || { echo "cannot install kubernetes-validate (needs python3-venv and PyPI)" >&2; exit 2; }
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet -k "$1" "${@:2}"; }
for version in 1.30.0 1.33.0; do
  validate "$version" "$here"/*.yaml
  echo "the manifests validate against Kubernetes $version (strict)"
done
broken=$(mktemp --suffix=.yaml)
trap 'rm -f "$broken"' EXIT
sed 's/completionMode: Indexed/completionMode: Indexd/; s/parallelism: 3/paralelism: 3/' "$here/clients.yaml" > "$broken"
if validate 1.30.0 "$broken" > /dev/null 2>&1; then
  echo "the validator accepted a broken manifest" >&2
  exit 1
fi
echo "a broken manifest is rejected"
