#!/usr/bin/env bash
# Starts a real `aiprod` server for SDK tests, on a free loopback port with a fresh SQLite
# database in DIR, and writes DIR/env with what a test needs:
#   AIPROD_ENDPOINT        http://127.0.0.1:PORT
#   AIPROD_API_KEY         a test-mode key of tenant "acme" (Platinum)
#   AIPROD_OTHER_API_KEY   a test-mode key of another tenant "globex" (Platinum)
#   AIPROD_ADMIN_TOKEN     the operator credential
#   AIPROD_BRONZE_API_KEY  a test-mode key of tenant "thrifty" (Bronze: 10 requests a minute, so
#                          it meets RESOURCE_EXHAUSTED + RetryInfo after a burst of 10 calls)
#   AIPROD_ADMIN_TOKEN     the operator credential
#   AIPROD_SERVER_PID      the server's pid
# Usage: scripts/test-server.sh start|stop|restart DIR
#   restart: stops the server (SIGTERM, graceful) and starts it again on the same port and database,
#            after AIPROD_RESTART_DOWN_MS (default 0) of downtime; rewrites DIR/env with the new pid.
# The binary is AIPROD_BIN, else target/debug/aiprod (built here if missing).
set -euo pipefail
cmd=${1:?usage: test-server.sh start|stop DIR}
dir=${2:?usage: test-server.sh start|stop DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${AIPROD_BIN:-$root/target/debug/aiprod}

stop_server() {
  if [ -f "$dir/env" ]; then
    # shellcheck disable=SC1091
    . "$dir/env"
    kill "$AIPROD_SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$AIPROD_SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  fi
}

case "$cmd" in
stop)
  stop_server
  exit 0
  ;;
start | restart) ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

[ -x "$bin" ] || (cd "$root" && cargo build --quiet --bin aiprod)
if [ "$cmd" = restart ]; then
  # shellcheck disable=SC1091
  . "$dir/env"
  db="sqlite://$dir/aiprod.db"
  admin_token=$AIPROD_ADMIN_TOKEN key=$AIPROD_API_KEY other=$AIPROD_OTHER_API_KEY bronze=$AIPROD_BRONZE_API_KEY
  listen=${AIPROD_ENDPOINT#http://}
  stop_server
  sleep "$(awk "BEGIN { print ${AIPROD_RESTART_DOWN_MS:-0} / 1000 }")"
else
  mkdir -p "$dir"
  db="sqlite://$dir/aiprod.db"
  admin_token="admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  "$bin" migrate --database-url "$db" >/dev/null
  acme=$("$bin" admin --database-url "$db" create-tenant --name acme --tier platinum 2>>"$dir/admin.log")
  globex=$("$bin" admin --database-url "$db" create-tenant --name globex --tier platinum 2>>"$dir/admin.log")
  key=$("$bin" admin --database-url "$db" create-key --tenant-id "$acme" --mode test --name sdk-tests 2>>"$dir/admin.log")
  other=$("$bin" admin --database-url "$db" create-key --tenant-id "$globex" --mode test --name sdk-tests 2>>"$dir/admin.log")
  thrifty=$("$bin" admin --database-url "$db" create-tenant --name thrifty --tier bronze 2>>"$dir/admin.log")
  bronze=$("$bin" admin --database-url "$db" create-key --tenant-id "$thrifty" --mode test --name sdk-tests 2>>"$dir/admin.log")
  listen=127.0.0.1:0
fi
rm -f "$dir/ready"
AIPROD_ADMIN_TOKEN="$admin_token" "$bin" serve --listen "$listen" --database-url "$db" \
  --ready-file "$dir/ready" --no-demo-tenant --sandbox-latency-ms "${AIPROD_SANDBOX_LATENCY_MS:-20}" \
  --sandbox-short-side "${AIPROD_TEST_SHORT_SIDE:-90}" \
  >>"$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ -s "$dir/ready" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "server exited; log:" >&2; cat "$dir/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$dir/ready" ] || { echo "server not ready after 30 s" >&2; kill "$pid"; exit 1; }
cat >"$dir/env" <<ENV
AIPROD_ENDPOINT=http://$(cat "$dir/ready")
AIPROD_API_KEY=$key
AIPROD_OTHER_API_KEY=$other
AIPROD_BRONZE_API_KEY=$bronze
AIPROD_ADMIN_TOKEN=$admin_token
AIPROD_SERVER_PID=$pid
ENV
cat "$dir/env"
