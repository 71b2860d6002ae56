#!/usr/bin/env bash
# Install everything jishi needs on Debian 12 (bookworm) or 13 (trixie):
#   - Debian packages: Mosquitto, PostgreSQL, RabbitMQ, a compiler, cmake, python3-venv;
#   - TimescaleDB for the installed PostgreSQL (Debian 13: the distribution's package;
#     Debian 12: built, Apache-only, from Debian trixie's source package);
#   - a virtualenv at .venv with the project installed editable with all extras;
#   - the test/demo OpenID Connect provider (node `oidc-provider`, the version pinned in
#     sim/oidc/package-lock.json) in sim/oidc/node_modules, by `npm ci` from the npm registry.
#
# Idempotent and quiet: every step first checks whether its work is already done, so a second
# run prints nothing and takes well under a second. Noisy output goes to var/install.log;
# only a one-line note per step that actually does work reaches the terminal.
#
# Services: the tests and the demo start private PostgreSQL and Mosquitto instances on free
# ports, so nothing needs the system-wide services. While installing we stop Debian's
# maintainer scripts from starting them (policy-rc.d), if no policy is in place already.
#
# `deploy/install.sh --database [NAME]` (a server, not the tests or the demo) then creates the
# database on the system PostgreSQL with its owner and the application roles, each process with
# its own DSN (deploy/db-roles.sh; docs/operations.md).
set -euo pipefail

SETUP_DB=""
if [[ "${1:-}" == "--database" ]]; then
  SETUP_DB="${2:-jishi}"
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.jishi-installed"
LOG="$REPO/var/install.log"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi
if [[ "$(id -u)" -eq 0 ]]; then
  CACHE="/var/cache/jishi"
else
  CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/jishi"
fi

say() { printf 'install: %s\n' "$*"; }

# Run a command with its output in the log; on failure show the end of the log and stop.
run() {
  mkdir -p "$(dirname "$LOG")"
  printf '\n$ %s\n' "$*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    printf 'install: FAILED: %s\n--- last lines of %s ---\n' "$*" "$LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

# Commands that need root: run directly as root, through sudo otherwise.
as_root() {
  if [[ "$(id -u)" -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    echo "install: root is needed for: $*  (run as root or install sudo)" >&2
    exit 1
  fi
  run "${SUDO[@]}" "$@"
}

missing_packages() {
  local p
  for p in "$@"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != ii* ]]; then
      printf '%s\n' "$p"
    fi
  done
}

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    as_root apt-get update
    APT_UPDATED=1
  fi
}

# Keep maintainer scripts from starting system services while we install.
POLICY=/usr/sbin/policy-rc.d
POLICY_OURS=0
remove_policy() {
  if [[ $POLICY_OURS -eq 1 ]]; then "${SUDO[@]}" rm -f "$POLICY"; POLICY_OURS=0; fi
}
trap remove_policy EXIT
block_service_starts() {
  if [[ ! -e "$POLICY" && $POLICY_OURS -eq 0 ]]; then
    printf '#!/bin/sh\n# written by jishi deploy/install.sh for the duration of an install\nexit 101\n' \
      | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    POLICY_OURS=1
  fi
}

apt_install() {
  local missing
  missing="$(missing_packages "$@")"
  [[ -z "$missing" ]] && return 0
  # shellcheck disable=SC2086
  say "installing Debian packages:" $missing
  apt_update_once
  block_service_starts
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
}

# Highest PostgreSQL major version that has a server installed.
pg_version() {
  local d v best=""
  for d in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x "$d" ]] || continue
    v="${d#/usr/lib/postgresql/}"; v="${v%%/*}"
    if [[ -z "$best" ]] || (( v > best )); then best="$v"; fi
  done
  [[ -n "$best" ]] || { echo "install: no PostgreSQL server found under /usr/lib/postgresql" >&2; exit 1; }
  printf '%s\n' "$best"
}

# The first Debian archive URI (path ending in /debian) configured on this machine.
debian_mirror() {
  local f line uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    while IFS= read -r line; do
      line="${line%%#*}"
      if [[ "$line" =~ ^[[:space:]]*URIs:[[:space:]]*(.*)$ ]]; then
        for uri in ${BASH_REMATCH[1]}; do
          if [[ "${uri%/}" == */debian ]]; then printf '%s\n' "${uri%/}"; return 0; fi
        done
      fi
    done <"$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    while IFS= read -r line; do
      line="${line%%#*}"
      # deb [options] URI suite components...
      if [[ "$line" =~ ^[[:space:]]*deb(-src)?[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+) ]]; then
        uri="${BASH_REMATCH[3]}"
        if [[ "${uri%/}" == */debian ]]; then printf '%s\n' "${uri%/}"; return 0; fi
      fi
    done <"$f"
  done
  return 1
}

# Download TimescaleDB's source package from Debian trixie with a private apt configuration
# (the system's sources and lists stay untouched) and build it Apache-only and without telemetry,
# as Debian 13's postgresql-17-timescaledb is built.
build_timescaledb() {
  local pgver="$1" pg_config="/usr/lib/postgresql/$1/bin/pg_config"
  local src="$CACHE/timescaledb-src" mirror lists list keyring opts tarball build
  mkdir -p "$src"
  tarball="$(find "$src" -maxdepth 1 -name 'timescaledb_*.orig.tar.*' | sort -V | tail -n 1)"
  if [[ -z "$tarball" ]]; then
    mirror="$(debian_mirror)" || {
      echo "install: no Debian archive URI (…/debian) found in /etc/apt sources" >&2; exit 1; }
    say "downloading TimescaleDB source from Debian trixie ($mirror)"
    lists="$(mktemp -d)"
    chmod 755 "$lists"
    mkdir -p "$lists/lists/partial" "$lists/cache/archives/partial"
    list="$lists/sources.list"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    opts=(-o "Dir::Etc::sourcelist=$list" -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::Lists=$lists/lists" -o "Dir::Cache=$lists/cache")
    printf 'deb-src [signed-by=%s] %s trixie main\n' "$keyring" "$mirror" >"$list"
    if ! (apt-get "${opts[@]}" update >>"$LOG" 2>&1 && compgen -G "$lists/lists/*Sources*" >/dev/null); then
      echo "trixie's signature did not verify with $keyring; retrying with trusted=yes" >>"$LOG"
      printf 'deb-src [trusted=yes] %s trixie main\n' "$mirror" >"$list"
      run apt-get "${opts[@]}" update
    fi
    (cd "$src" && run apt-get "${opts[@]}" source --download-only timescaledb)
    rm -rf "$lists"
    tarball="$(find "$src" -maxdepth 1 -name 'timescaledb_*.orig.tar.*' | sort -V | tail -n 1)"
    [[ -n "$tarball" ]] || { echo "install: apt-get source gave no timescaledb orig tarball" >&2; exit 1; }
  fi
  say "building TimescaleDB $(basename "$tarball" | sed 's/^timescaledb_//; s/\.orig.*//') (Apache-only) for PostgreSQL $pgver"
  build="$(mktemp -d)"
  run tar -xf "$tarball" -C "$build" --strip-components=1
  (cd "$build" && run ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF \
      -DUSE_TELEMETRY=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
      -DPG_CONFIG="$pg_config")
  run make -C "$build/build" -j"$(nproc)"
  as_root make -C "$build/build" install
  rm -rf "$build"
}

install_timescaledb() {
  local pgver pkglibdir pkg
  pgver="$(pg_version)"
  pkglibdir="$("/usr/lib/postgresql/$pgver/bin/pg_config" --pkglibdir)"
  if compgen -G "$pkglibdir/timescaledb*.so" >/dev/null; then return 0; fi
  pkg="postgresql-$pgver-timescaledb"
  [[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$')" ]] \
    || apt_update_once
  if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_install "$pkg"
  else
    apt_install "postgresql-server-dev-$pgver" xz-utils
    build_timescaledb "$pgver"
  fi
  compgen -G "$pkglibdir/timescaledb*.so" >/dev/null \
    || { echo "install: TimescaleDB is still missing from $pkglibdir" >&2; exit 1; }
}

install_venv() {
  if [[ -f "$STAMP" && "$STAMP" -nt "$REPO/pyproject.toml" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  say "installing the Python environment in .venv"
  if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    rm -rf "$VENV"
    run /usr/bin/python3 -m venv "$VENV"
  fi
  run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO[agent,server,dev]"
  touch "$STAMP"
}

# The university-login tests and the demo run a real OpenID Connect provider: node `oidc-provider`
# (v8 needs node >= 18; Debian 12 ships 18.19, Debian 13 20.x), installed from the lock file into
# sim/oidc/node_modules (git-ignored). Redone only when the lock file is newer than the stamp.
install_oidc_provider() {
  local dir="$REPO/sim/oidc" stamp="$REPO/sim/oidc/node_modules/.jishi-installed"
  if [[ -f "$stamp" && "$stamp" -nt "$dir/package-lock.json" ]]; then
    return 0
  fi
  say "installing the test OpenID Connect provider (npm ci in sim/oidc)"
  (cd "$dir" && run npm ci --no-audit --no-fund --omit=dev)
  touch "$stamp"
}

# rabbitmq-server: the three-node broker cluster of tests/cluster (sim/rabbitcluster.py), private
# nodes on free ports like the rest; the system service is not started (policy-rc.d above)
apt_install mosquitto mosquitto-clients postgresql postgresql-contrib \
  build-essential cmake python3-venv python3-dev rabbitmq-server
# Debian's nodejs and npm, unless a node with npm is there already (e.g. NodeSource's nodejs, which
# bundles npm and conflicts with Debian's npm package)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
install_timescaledb
remove_policy
install_venv
install_oidc_provider
if [[ -n "$SETUP_DB" ]]; then
  say "creating database $SETUP_DB and its roles on the system PostgreSQL"
  "${SUDO[@]}" "$REPO/deploy/db-roles.sh" "$SETUP_DB"
fi
