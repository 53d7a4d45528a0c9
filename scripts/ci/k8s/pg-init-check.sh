#!/usr/bin/env bash
# Runs the in-chart Postgres init script (ConfigMap <fullname>-postgres-init of a rendering with
# infra.enabled) against a throwaway local Postgres, twice (it must be idempotent), then checks
# that each service's DATABASE_URL from the generated dev Secret logs in to its own database,
# can create a table there, and is refused by another service's database.
#
# Usage: scripts/ci/k8s/pg-init-check.sh RENDERED.yaml
# Needs the Debian Postgres server binaries (/usr/lib/postgresql/<ver>/bin) and, because initdb
# refuses root, either to run as root (it then uses the `postgres` user) or as a non-root user.
# Exit 2 (with the reason) when those are not available, so the caller can report a skip.
set -euo pipefail

rendered="$1"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
python="${PYTHON:-$root/.tools/venv/bin/python}"

pgbin=""
for d in /usr/lib/postgresql/*/bin; do
  if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then pgbin="$d"; fi
done
if [[ -z "$pgbin" ]] || ! command -v psql >/dev/null; then
  echo "  skipped: no Postgres server binaries (scripts/bootstrap.sh installs them)"
  exit 2
fi
as_pg=()
if [[ $EUID -eq 0 ]]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "  skipped: running as root and there is no postgres user for initdb"
    exit 2
  fi
  as_pg=(runuser -u postgres --)
fi

work=$(mktemp -d)
chmod 755 "$work"
[[ $EUID -eq 0 ]] && chown postgres "$work"
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The init script, its environment (per-service passwords) and the DATABASE_URLs.
"$python" - "$rendered" "$work" <<'EOF'
import shlex, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
init = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-postgres-init"))
(name, script), = init["data"].items()
open(f"{sys.argv[2]}/init.sh", "w").write(script)
sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("-postgres"))
secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
env = []
for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]:
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if e["name"].startswith("JETMART_DB_PASSWORD_") and ref:
        env.append(f"export {e['name']}={shlex.quote(secrets[ref['name']][ref['key']])}")
open(f"{sys.argv[2]}/env.sh", "w").write("\n".join(env) + "\n")
urls = [s["DATABASE_URL"] for s in secrets.values() if "DATABASE_URL" in s]
open(f"{sys.argv[2]}/urls", "w").write("\n".join(sorted(urls)) + "\n")
EOF
chmod 644 "$work"/*

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -w -l "$work/pg.log" \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null

for round in 1 2; do
  "${as_pg[@]}" env POSTGRES_USER=postgres PGHOST="$work" PGPORT="$port" \
    bash -c ". '$work/env.sh' && bash '$work/init.sh'" >"$work/init-$round.log" 2>&1 \
    || { echo "  init script failed (run $round):"; sed 's/^/    /' "$work/init-$round.log"; exit 1; }
done
echo "  init script ran twice (idempotent) on Postgres $("$pgbin/postgres" --version | awk '{print $3}')"

n=0
mapfile -t urls <"$work/urls"
for url in "${urls[@]}"; do
  local_url=$(sed -E "s#@[^/]+/#@127.0.0.1:$port/#" <<<"$url")
  db=${local_url##*/}; db=${db%%\?*}
  user=$(sed -E 's#^postgres://([^:]+):.*#\1#' <<<"$url")
  got=$(psql "$local_url" -v ON_ERROR_STOP=1 -qtAc \
    "CREATE TABLE jetmart_probe (x int); DROP TABLE jetmart_probe; SELECT current_user || '@' || current_database()")
  [[ "$got" == "$user@$db" ]] || { echo "  $user: logged in as $got"; exit 1; }
  # Every other service's database must refuse this role.
  for other in "${urls[@]}"; do
    odb=${other##*/}; odb=${odb%%\?*}
    [[ "$odb" == "$db" ]] && continue
    if psql "${local_url%/*}/$odb?sslmode=disable" -tAc 'SELECT 1' >/dev/null 2>&1; then
      echo "  $user can connect to $odb"; exit 1
    fi
  done
  n=$((n + 1))
done
echo "  ${n} service roles: log in with their DATABASE_URL, own their database, refused by the others"
