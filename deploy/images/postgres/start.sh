#!/bin/bash
# chatd-postgres [postgres ARGS...] — PostgreSQL's entry point in chatd's image:
# on first start initialise $PGDATA (SCRAM everywhere, superuser chat_admin,
# database chat), then exec the server. Any other command runs as given (the
# compose file's db-init runs psql in this image).
set -euo pipefail
if [[ ${1:-} != postgres ]]; then
  exec "$@"
fi
if [[ ! -s $PGDATA/PG_VERSION ]]; then
  pw=${POSTGRES_PASSWORD:-}
  if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then pw=$(<"$POSTGRES_PASSWORD_FILE"); fi
  [[ -n $pw ]] || { echo "chatd-postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2; exit 1; }
  pwfile=$(mktemp)
  printf '%s\n' "$pw" >"$pwfile"
  initdb -D "$PGDATA" --username="${POSTGRES_USER:-chat_admin}" --pwfile="$pwfile" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "CREATE DATABASE ${POSTGRES_DB:-chat}" | postgres --single -D "$PGDATA" postgres >/dev/null
  echo "chatd-postgres: initialised $PGDATA"
fi
shift
exec postgres -D "$PGDATA" "$@"
