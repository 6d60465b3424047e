#!/usr/bin/env bash
# Installs what the test suite needs outside the Python venv: Debian packages by name and the
# npm modules of tests/js. Idempotent, and quick when everything is present (it runs on every
# `make test`): apt-get and npm are only called when something is missing or stale.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JS_DIR="$ROOT/tests/js"

log() { printf 'install-system: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()  # apt-get will say no if it is needed; everything else needs no root
fi

missing=()
# need_cmd COMMAND PACKAGE...: install PACKAGE... when COMMAND is not on PATH.
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("${@:2}"); }
# need_file GLOB PACKAGE...: install PACKAGE... when nothing matches GLOB.
need_file() { compgen -G "$1" >/dev/null || missing+=("${@:2}"); }

# --- Debian packages -------------------------------------------------------------------------
# PostgreSQL server binaries (initdb, pg_ctl) for tests/support/postgres.py.
need_file '/usr/lib/postgresql/*/bin/initdb' postgresql
# Node.js + npm for the official JS SDK (tests/js); an existing node is kept, whatever its origin.
need_cmd node nodejs npm
need_cmd curl curl
# wrk: the load generator of bench/ (`make bench`; the benchmarks fall back to Python without it).
need_cmd wrk wrk
# Chromium: the dashboard's browser tests (tests/dashboard; Playwright drives /usr/bin/chromium).
need_cmd chromium chromium
# Caddy 2.6 (Debian's `caddy`): the production proxy (proxy/caddy, tests with a real Caddy).
need_cmd caddy caddy
# bubblewrap: the sandbox of every instance process (control_plane/drivers/sandbox.py).
need_cmd bwrap bubblewrap
# util-linux's prlimit and setpriv set an instance's limits and user (essential on Debian).
need_cmd setpriv util-linux
# tests/security (the hostile-tenant suite): strace sees every execve; Debian's python3 (in
# /usr, visible inside a sandbox) plays the tenant's listener; gcc builds an LD_PRELOAD library.
need_cmd strace strace
need_file /usr/bin/python3 python3
need_cmd gcc gcc
# OpenSSH's sftp, scp and ssh-keygen: the SFTP server's tests (tests/control_plane/sftp).
need_cmd sftp openssh-client
# Docker engine (Debian's docker.io): the docker driver (control_plane/drivers/docker.py).
need_cmd dockerd docker.io

if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- npm modules of tests/js -----------------------------------------------------------------
command -v npm >/dev/null 2>&1 || die "node is installed but npm is not"
modules="$JS_DIR/node_modules"
if [[ ! -d $modules || $JS_DIR/package.json -nt $modules ||
      ( -f $JS_DIR/package-lock.json && $JS_DIR/package-lock.json -nt $modules ) ]]; then
  log "installing npm modules in tests/js"
  if [[ -f $JS_DIR/package-lock.json ]]; then
    (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$JS_DIR" && npm install --no-audit --no-fund --loglevel=error)
  fi
  touch "$modules"
fi

# --- the dashboard's front-end files (dashboard/package.json) --------------------------------
# htmx comes from the npm registry and is copied into dashboard/static/vendor/, which the
# dashboard serves at /static/vendor/ (no CDN; pages work without it, only less live).
DASH_DIR="$ROOT/dashboard"
vendor="$DASH_DIR/static/vendor"
if [[ ! -f $vendor/htmx.min.js || $DASH_DIR/package.json -nt $vendor/htmx.min.js ||
      ( -f $DASH_DIR/package-lock.json && $DASH_DIR/package-lock.json -nt $vendor/htmx.min.js ) ]]; then
  log "installing the dashboard's npm modules"
  if [[ -f $DASH_DIR/package-lock.json ]]; then
    (cd "$DASH_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$DASH_DIR" && npm install --no-audit --no-fund --loglevel=error)
  fi
  mkdir -p "$vendor"
  cp "$DASH_DIR/node_modules/htmx.org/dist/htmx.min.js" "$vendor/htmx.min.js"
  cp "$DASH_DIR/node_modules/htmx.org/LICENSE" "$vendor/htmx.LICENSE.txt"
fi
