#!/usr/bin/env bash
# Entrypoint of the Postgres stand-in image (scripts/images/standins/postgres): the part of the
# official postgres image's docker-entrypoint.sh that the chart relies on. On an empty $PGDATA:
# initdb with superuser $POSTGRES_USER / $POSTGRES_PASSWORD, password (scram) auth for TCP, then
# every /docker-entrypoint-initdb.d/*.sh (executed when executable, else sourced) and *.sql
# against a socket-only temporary server. Then `postgres` listening on all addresses.
set -euo pipefail

if [[ "${1:-postgres}" != postgres ]]; then exec "$@"; fi
[[ $# -gt 0 ]] && shift

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:?PGDATA must be set}"
[[ -n "${POSTGRES_PASSWORD:-}" ]] || { echo "postgres stand-in: POSTGRES_PASSWORD is required" >&2; exit 1; }
export POSTGRES_USER POSTGRES_DB PGDATA

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  export PGPASSWORD="$POSTGRES_PASSWORD"
  if [[ "$POSTGRES_DB" != postgres ]]; then
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [[ -e "$f" ]] || continue
    case "$f" in
      *.sh)
        echo "postgres stand-in: running $f"
        if [[ -x "$f" ]]; then "$f"; else
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) echo "postgres stand-in: running $f"; psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f" ;;
      *) echo "postgres stand-in: ignoring $f" ;;
    esac
  done
  unset PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres stand-in: database initialised in $PGDATA"
fi

exec postgres -c listen_addresses='*' "$@"
