#!/usr/bin/env bash
# Create the Jishi database and its roles on the system PostgreSQL (as root; idempotent):
#   jishi         the owner: owns the schema, runs `jishi-server migrate` and nothing else
#                 (peer authentication: the OS user jishi over the Unix socket);
#   jishi_ingest  ingest (and pack / rederive / quarantine): writes records, reads the registry;
#   jishi_web     the web app: writes the registry, reads records;
#   jishi_admin   the `jishi` console.
# The three application roles own nothing; their rights are server/db/grants.sql, applied by
# every `jishi-server migrate`. Each gets a random password, created once and kept, and its DSN
# is written where its process reads it:
#   /etc/jishi/ingest-db.env  JISHI_DATABASE__DSN (ingest) and JISHI_DATABASE__OWNER_DSN (migrate)
#   /etc/jishi/web-db.env     JISHI_WEB_DSN (the web's other settings stay in /etc/jishi/web.env)
#   /etc/jishi/admin.env      JISHI_DATABASE_URL (source it before running `jishi`)
# Usage: deploy/db-roles.sh [DATABASE]   (default: jishi); deploy/install.sh --database runs it.
set -euo pipefail

DB="${1:-jishi}"
ETC=/etc/jishi
SECRETS="$ETC/db"
[[ "$(id -u)" -eq 0 ]] || { echo "db-roles: run as root" >&2; exit 1; }
id jishi >/dev/null 2>&1 || useradd --system --home /var/lib/jishi --shell /usr/sbin/nologin jishi
install -d -m 0750 -o root -g jishi "$ETC" "$SECRETS"

psql_su() { sudo -u postgres psql -v ON_ERROR_STOP=1 -qAt "$@"; }

role_exists() { [[ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname = '$1'")" == 1 ]]; }

role_exists jishi || psql_su -c "CREATE ROLE jishi LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
[[ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" == 1 ]] \
  || sudo -u postgres createdb -O jishi "$DB"
# TimescaleDB is not a trusted extension: the superuser creates it, the owner never needs to be one.
psql_su -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS timescaledb"

declare -A DSN
for role in jishi_ingest jishi_web jishi_admin; do
  secret="$SECRETS/$role"
  if [[ ! -s "$secret" ]]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$secret")
  fi
  chgrp jishi "$secret" && chmod 0640 "$secret"
  pw="$(cat "$secret")"
  verb=CREATE; role_exists "$role" && verb=ALTER
  psql_su -c "$verb ROLE $role LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD '$pw'"
  DSN[$role]="postgresql://$role:$pw@127.0.0.1/$DB"
done

write_env() {  # file, lines...
  local file="$1"; shift
  (umask 027; printf '%s\n' "$@" > "$file.new")
  chgrp jishi "$file.new" && chmod 0640 "$file.new" && mv "$file.new" "$file"
}
write_env "$ETC/ingest-db.env" "JISHI_DATABASE__DSN=${DSN[jishi_ingest]}" \
  "JISHI_DATABASE__OWNER_DSN=postgresql://jishi@/$DB"
write_env "$ETC/web-db.env" "JISHI_WEB_DSN=${DSN[jishi_web]}"
write_env "$ETC/admin.env" "JISHI_DATABASE_URL=${DSN[jishi_admin]}"
echo "db-roles: database $DB, owner jishi, roles jishi_ingest / jishi_web / jishi_admin; DSNs in $ETC/*.env"
