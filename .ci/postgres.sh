# Sourced by .ci/run: a throwaway PostgreSQL server on a free 127.0.0.1 port, for the sink
# tests. Exports LAKE_TEST_PG_URL (a superuser with a password) and LAKE_REQUIRE_PG; the
# caller stops it with `pg_stop`.
pg_bin() {
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/pg_ctl" ]; then
    pg_config --bindir
  else
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
  fi
}
PG_BIN="$(pg_bin)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
  echo "== installing PostgreSQL (Debian packages)"
  apt-get install -y --no-install-recommends postgresql >/dev/null
  PG_BIN="$(pg_bin)"
fi
PG_DIR="$(mktemp -d)"
PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PG_PASSWORD="lake-ci-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
echo "$PG_PASSWORD" >"$PG_DIR/pw"
# initdb refuses to run as root: the server runs as the postgres user when there is one.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown -R postgres "$PG_DIR"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U lake --pwfile="$PG_DIR/pw" -A scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 \
  || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
  || { cat "$PG_DIR/server.log" >&2; exit 1; }
pg_stop() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
export LAKE_TEST_PG_URL="postgres://lake:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
export LAKE_REQUIRE_PG=1
export PATH="$PATH:$PG_BIN"
