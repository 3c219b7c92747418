#!/usr/bin/env bash
# dcsync local default: two datacenters, "bj" and "sh", on loopback.
# Starts two private MariaDB servers (ports 13306, 13307) and two Redis
# servers (16379, 16380) under ./local-demo, one dcsync agent per DC from
# ./local-demo/topology.toml, writes rows and keys in both DCs at once, and
# shows both sides converged (CHECKSUM TABLE, Redis key digests, dcsync status).
# Everything is stopped on exit; KEEP=1 leaves it running for you to play with.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/local-demo
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "== building dcsync"
cargo build -q -p dcsync-agent
DCSYNC=$ROOT/target/debug/dcsync
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

for p in 13306 13307 16379 16380 7701 7702; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is in use (an earlier demo with KEEP=1? run: pkill -f local-demo); stopping" >&2; exit 1
  fi
done
rm -rf "$DEMO"; mkdir -p "$DEMO"
pids=()
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then echo "KEEP=1: left running (logs in $DEMO); stop with: pkill -f local-demo"; return; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

sql() { mariadb --protocol=tcp -h127.0.0.1 -P"$1" -uroot -N -B -e "$2"; }

start_mariadb() { # name port server_id
  local d=$DEMO/mariadb-$1
  mariadb-install-db --no-defaults --datadir="$d" --auth-root-authentication-method=normal \
    --skip-test-db --user="$(id -un)" >"$DEMO/install-$1.log" 2>&1
  "$MARIADBD" --no-defaults --user="$(id -un)" --datadir="$d" --port="$2" --bind-address=127.0.0.1 \
    --socket="$DEMO/mariadb-$1.sock" --pid-file="$DEMO/mariadb-$1.pid" --log-error="$DEMO/mariadb-$1.err" \
    --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
    --server-id="$3" --skip-name-resolve --innodb-buffer-pool-size=64M \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_bin 2>>"$DEMO/mariadb-$1.err" &
  pids+=($!)
}
start_redis() { # name port
  redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly no --dir "$DEMO" \
    --logfile "$DEMO/redis-$1.log" &
  pids+=($!)
}

echo "== starting MariaDB bj:13306 sh:13307 and Redis bj:16379 sh:16380"
start_mariadb bj 13306 1; start_mariadb sh 13307 2
start_redis bj 16379; start_redis sh 16380
for port in 13306 13307; do
  for _ in $(seq 1 100); do sql $port "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  sql $port "SELECT 1" >/dev/null
  sql $port "CREATE DATABASE shop;
    CREATE TABLE shop.users (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, name VARCHAR(64), balance DECIMAL(12,2), updated DATETIME(6));
    CREATE TABLE shop.counters (id INT PRIMARY KEY, user_id BIGINT NOT NULL, n BIGINT NOT NULL);
    INSERT INTO shop.counters VALUES (1, 1, 0), (2, 2, 0);"
done
for port in 16379 16380; do
  for _ in $(seq 1 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
done

cat >"$DEMO/topology.toml" <<TOML
cluster = "shop"
mode = "mesh"
[[dc]]
id = "bj"
link = "127.0.0.1:7701"
[[dc]]
id = "sh"
link = "127.0.0.1:7702"
[units]
count = 64
owners = { bj = "0-31", sh = "32-63" }
[[store]]
name = "orders"
kind = "mysql"
tables = ["shop.*"]
unit_key = "user_id"
url = { bj = "mysql://root@127.0.0.1:13306", sh = "mysql://root@127.0.0.1:13307" }
[[store]]
name = "cache"
kind = "redis"
url = { bj = "redis://127.0.0.1:16379", sh = "redis://127.0.0.1:16380" }
[tls]
ca = "certs/ca.crt"
cert = "certs/{dc}.crt"
key = "certs/{dc}.key"
TOML
"$DCSYNC" check --topology "$DEMO/topology.toml"
"$DCSYNC" certs --topology "$DEMO/topology.toml" | head -3

echo "== starting agents (logs: $DEMO/agent-*.log)"
for dc in bj sh; do
  (cd "$DEMO" && exec "$DCSYNC" run --topology topology.toml --dc $dc) 2>"$DEMO/agent-$dc.log" &
  pids+=($!)
done
for _ in $(seq 1 100); do
  [ -f "$DEMO/dcsync-data/bj/status.json" ] && [ -f "$DEMO/dcsync-data/sh/status.json" ] && break; sleep 0.2
done
# No warm-up needed: on its first start a MySQL source copies what its
# tables hold in a consistent snapshot and tails the binlog from exactly
# there, and a Redis source takes a full sync, so writes made while the
# agents connect are not missed (docs/operations.md, "Starting on existing
# data").
echo "== writing in both DCs at once: 1000 rows each, updates, deletes, counters, Redis keys"
write_dc() { # port base redisport
  local s=""
  for i in $(seq 1 1000); do s+="INSERT INTO shop.users VALUES ($(( $2 + i )), $i, 'user $i from $1', $i.50, NOW(6));"; done
  for i in $(seq 1 300); do s+="UPDATE shop.users SET balance = balance + 1 WHERE id = $(( $2 + i ));"; done
  for i in $(seq 901 1000); do s+="DELETE FROM shop.users WHERE id = $(( $2 + i ));"; done
  for i in $(seq 1 200); do s+="UPDATE shop.counters SET n = n + 1 WHERE id = $4;"; done
  sql "$1" "$s"
  for i in $(seq 1 500); do echo "SET key:{$(( $2 + i ))} v$i"; echo "HSET h:{$(( $2 + i ))} f $i"; done | redis-cli -p "$3" >/dev/null
  echo "INCRBY counter:$1 200" | redis-cli -p "$3" >/dev/null
}
write_dc 13306 0 16379 2 & w1=$!  # counter 2 (user 2): unit owned by bj
write_dc 13307 100000 16380 1 & w2=$!  # counter 1 (user 1): unit owned by sh
wait $w1 $w2

# dcsync's own apply-marker keys (dcsync:*) differ per DC by design; skip them.
keys() { redis-cli -p "$1" --scan | { grep -v '^dcsync:' || true; } | sort; }
digest() { keys "$1" | sed 's/^/DUMP /' | redis-cli -p "$1" | sha1sum | cut -c1-16; }
echo "== waiting for both DCs to converge"
ok=0
for _ in $(seq 1 120); do
  a=$(sql 13306 "CHECKSUM TABLE shop.users, shop.counters"); b=$(sql 13307 "CHECKSUM TABLE shop.users, shop.counters")
  ka=$(keys 16379 | wc -l); kb=$(keys 16380 | wc -l)
  if [ "$a" = "$b" ] && [ "$ka" = "$kb" ] && [ "$(digest 16379)" = "$(digest 16380)" ]; then ok=1; break; fi
  sleep 1
done
echo
echo "-- bj (MariaDB 13306)"; sql 13306 "CHECKSUM TABLE shop.users, shop.counters"; sql 13306 "SELECT COUNT(*) AS users, (SELECT SUM(n) FROM shop.counters) AS counter_sum FROM shop.users"
echo "-- sh (MariaDB 13307)"; sql 13307 "CHECKSUM TABLE shop.users, shop.counters"; sql 13307 "SELECT COUNT(*) AS users, (SELECT SUM(n) FROM shop.counters) AS counter_sum FROM shop.users"
echo "-- Redis keys/digest: bj $(keys 16379 | wc -l)/$(digest 16379)  sh $(keys 16380 | wc -l)/$(digest 16380)"
echo
(cd "$DEMO" && "$DCSYNC" status --dc bj)
echo
if [ $ok = 1 ]; then echo "CONVERGED: bj and sh hold the same data"; else echo "NOT CONVERGED within 120 s; see $DEMO/agent-*.log" >&2; exit 1; fi
