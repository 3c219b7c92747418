#!/usr/bin/env bash
# Benchmarks dcsync against native MariaDB and Redis replication on this
# machine and prints a table. Not part of the test suite (CI stays fast).
#
#   ./scripts/bench.sh --quick                       # about 5 minutes (+1-2 for big-transaction)
#   ./scripts/bench.sh                               # full run (1M-row backlog)
#   ./scripts/bench.sh --quick --markdown out.md     # also write the table
#   ./scripts/bench.sh --txns 50000 --cases replay   # one case, own size
#   ./scripts/bench.sh --cases big-transaction       # one 300,000-row UPDATE, agent peak RSS
#   ./scripts/bench.sh --cases snapshot,verify       # 1,000,000-row initial snapshot against
#                                                    # mysqldump | mysql, then dcsync verify
#   ./scripts/bench.sh --cases snapshot --snapshot-rows 100000   # smaller table
#   ./scripts/bench.sh --cases star --lag-secs 20    # 4 DCs, star (hub bj) vs mesh: WAN
#                                                    # bytes/change, lag sh->tk, hub CPU/RSS
#                                                    # (about a minute; --star-rate N rows/s per DC)
#
# snapshot, verify and star run only when named in --cases (the default run
# leaves them out); verify needs the dcsync snapshot and runs it first.
#
# Every option is passed to `dcsync-bench` (`--help` lists them). Private
# mariadbd/redis-server instances are started on free loopback ports in
# temporary directories; the system MariaDB and Redis are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
need=()
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v mariadb-dump >/dev/null 2>&1 || need+=(mariadb-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release -p dcsync-agent -p dcsync-bench
echo "bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
echo "bench: $(/usr/sbin/mariadbd --version 2>/dev/null || mariadbd --version), $(redis-server --version | cut -d' ' -f3), $(sysbench --version)"
exec ./target/release/dcsync-bench "$@"
