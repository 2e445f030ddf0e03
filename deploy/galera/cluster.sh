#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster and HAProxy on loopback, for tests and demos (not for production:
# see deploy/galera/production/ for that).
#
#   deploy/galera/cluster.sh start            bootstrap node 1, join 2 and 3, start HAProxy (idempotent)
#   deploy/galera/cluster.sh stop             stop HAProxy and every node, by their pid files
#   deploy/galera/cluster.sh status           wsrep state per node and HAProxy; exit 0 only when all are Synced
#   deploy/galera/cluster.sh kill N           kill -9 node N (a crash, for failure tests)
#   deploy/galera/cluster.sh start-node N     start node N again; it recovers its position and catches up by IST
#   deploy/galera/cluster.sh wipe             stop, then delete every node's data
#
# Ports: node N serves SQL on 331N and Galera on 456(6+N). HAProxy serves 3310 (round robin over the
# Synced nodes) and 332N (node N first, the others as backups: what a bot host next to node N uses).
# Everything lives under $RECBOT_GALERA_DIR (default: .galera/ in the checkout). Nodes are small:
# 64 MiB of buffer pool each, so the three fit beside the bot on a 2-core machine.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${RECBOT_GALERA_DIR:-$HERE/../../.galera}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PROVIDER="${RECBOT_GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}"
NODES=(1 2 3)
HA_PORT=3310
# Run as root, mariadbd would make the state transfer's rsync daemon run as nobody, which cannot
# write the joiner's files: run the nodes as mysql, as the packaged server does.
if [ "$(id -u)" = 0 ] && id mysql >/dev/null 2>&1; then RUN_AS=mysql; else RUN_AS="$(id -un)"; fi
GCOMM="gcomm://127.0.0.1:4567,127.0.0.1:4568,127.0.0.1:4569"

die() { echo "galera: $*" >&2; exit 1; }
sql_port() { echo $((3310 + $1)); }
node_dir() { echo "$DIR/node$1"; }
# The node's pid: from its pid file here, else from the server itself (a cluster another checkout started).
pid_of() {
  local f; f="$(node_dir "$1")/mariadbd.pid"
  [ -s "$f" ] || f="$(q "$1" "SELECT @@pid_file" || true)"
  [ -n "$f" ] && cat "$f" 2>/dev/null || true
}
alive() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
q() { mysql --protocol=tcp -h127.0.0.1 -P"$(sql_port "$1")" -uroot --connect-timeout=2 -N -B -e "$2" 2>/dev/null; }
wsrep_state() { q "$1" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_LOCAL_STATE_COMMENT'" || echo "down"; }

need() {
  [ -e "$PROVIDER" ] || die "no Galera provider at $PROVIDER: apt-get install galera-4 (or set RECBOT_GALERA_PROVIDER)"
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || die "no mariadbd: apt-get install mariadb-server"
  command -v haproxy >/dev/null || die "no haproxy: apt-get install haproxy"
  command -v rsync >/dev/null || die "no rsync (the state transfer uses it): apt-get install rsync"
}

write_cnf() {
  local n=$1 d; d="$(node_dir "$n")"
  cat >"$d/my.cnf" <<EOF
[mysqld]
user=$RUN_AS
datadir=$d/data
socket=$d/mariadbd.sock
pid-file=$d/mariadbd.pid
log-error=$d/error.log
port=$(sql_port "$n")
bind-address=127.0.0.1
skip-name-resolve
# Galera replicates InnoDB rows; these three are what it requires.
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=2
performance_schema=OFF
max_connections=200
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
wsrep_on=ON
wsrep_provider=$PROVIDER
wsrep_cluster_name=recbot-demo
wsrep_cluster_address=$GCOMM
wsrep_node_name=node$n
wsrep_node_address=127.0.0.1:$((4566 + n))
wsrep_node_incoming_address=127.0.0.1:$(sql_port "$n")
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$((4476 + n))
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:$((4566 + n));ist.recv_addr=127.0.0.1:$((4576 + n));gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;evs.install_timeout=PT6S"
EOF
}

init_node() {
  local n=$1 d; d="$(node_dir "$n")"
  [ -d "$d/data/mysql" ] && return 0
  mkdir -p "$d/data"
  write_cnf "$n"
  chown -R "$RUN_AS" "$d"
  mariadb-install-db --defaults-file="$d/my.cnf" --auth-root-authentication-method=normal \
    --skip-test-db >"$d/install.log" 2>&1 || die "node $n: mariadb-install-db failed, see $d/install.log"
}

wait_synced() {
  local n=$1 state=""
  for _ in $(seq 1 120); do
    state="$(wsrep_state "$n")"
    [ "$state" = "Synced" ] && return 0
    alive "$n" || die "node $n exited while starting; see $(node_dir "$n")/error.log"
    sleep 0.5
  done
  die "node $n is '$state', not Synced, after 60 s; see $(node_dir "$n")/error.log"
}

# The position a node stopped at, so that it rejoins by IST (only what it missed) rather than a full SST.
recovered_position() {
  local d; d="$(node_dir "$1")"
  mariadbd --defaults-file="$d/my.cnf" --wsrep-recover --log-error="$d/recover.log" >/dev/null 2>&1 || true
  sed -n 's/.*WSREP: Recovered position: \([0-9a-f-]*:-\{0,1\}[0-9]*\).*/\1/p' "$d/recover.log" | tail -n1
}

start_node() {
  local n=$1 bootstrap=${2:-} d pos; d="$(node_dir "$n")"
  alive "$n" && return 0
  init_node "$n"
  write_cnf "$n"
  chown "$RUN_AS" "$d"
  local args=(--defaults-file="$d/my.cnf")
  if [ -n "$bootstrap" ]; then
    args+=(--wsrep-new-cluster)
    sed -i 's/^safe_to_bootstrap: 0/safe_to_bootstrap: 1/' "$d/data/grastate.dat" 2>/dev/null || true
  else
    pos="$(recovered_position "$n")"
    [ -n "$pos" ] && args+=(--wsrep-start-position="$pos")
  fi
  rm -f "$d/mariadbd.pid"  # a crash leaves it behind, naming a dead process
  setsid mariadbd "${args[@]}" </dev/null >>"$d/stdout.log" 2>&1 &
  for _ in $(seq 1 40); do [ -s "$d/mariadbd.pid" ] && break; sleep 0.25; done
  wait_synced "$n"
}

write_haproxy() {
  local cfg="$DIR/haproxy.cfg" n m
  {
    cat <<EOF
global
    pidfile $DIR/haproxy.pid
    external-check
    insecure-fork-wanted
    log stderr format short local0 notice

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    # A node that leaves Synced (crashed, desynced, donating, non-primary) is out within ~2 s.
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
    # A connection refused by a node that just died goes to another node instead of failing.
    retries 3
    option redispatch
    option external-check
    external-check path "/usr/bin:/bin:/usr/sbin"
    external-check command $HERE/wsrep-check

listen galera
    bind 127.0.0.1:$HA_PORT
    balance roundrobin
EOF
    for n in "${NODES[@]}"; do echo "    server node$n 127.0.0.1:$(sql_port "$n") check"; done
    for n in "${NODES[@]}"; do
      echo
      echo "listen galera_prefer_node$n"
      echo "    bind 127.0.0.1:$((3320 + n))"
      echo "    server node$n 127.0.0.1:$(sql_port "$n") check"
      for m in "${NODES[@]}"; do
        [ "$m" = "$n" ] || echo "    server node$m 127.0.0.1:$(sql_port "$m") check backup"
      done
    done
  } >"$cfg"
  haproxy -c -q -f "$cfg" || die "haproxy rejected $cfg"
}

haproxy_alive() {
  local pid; pid="$(cat "$DIR/haproxy.pid" 2>/dev/null || true)"
  if [ -n "$pid" ]; then kill -0 "$pid" 2>/dev/null; return; fi
  # Started from another checkout: it is up if it passes SQL through.
  mysql --protocol=tcp -h127.0.0.1 -P"$HA_PORT" -uroot --connect-timeout=2 -e "SELECT 1" >/dev/null 2>&1
}

start_haproxy() {
  haproxy_alive && return 0
  write_haproxy
  haproxy -D -f "$DIR/haproxy.cfg" -p "$DIR/haproxy.pid" 2>>"$DIR/haproxy.log" || die "haproxy did not start; see $DIR/haproxy.log"
  for _ in $(seq 1 40); do
    mysql --protocol=tcp -h127.0.0.1 -P"$HA_PORT" -uroot --connect-timeout=2 -e "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "HAProxy on $HA_PORT does not pass SQL through; see $DIR/haproxy.log"
}

cmd_start() {
  need
  if ! alive 1 && ! alive 2 && ! alive 3; then
    start_node 1 bootstrap
    q 1 "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
      || mysql -S "$(node_dir 1)/mariadbd.sock" -uroot -e \
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  fi
  for n in "${NODES[@]}"; do start_node "$n"; done
  start_haproxy
  cmd_status
}

stop_pid() {
  local pidfile=$1 pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid"
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  stop_pid "$DIR/haproxy.pid"
  # The last node to stop is the one that may bootstrap the cluster next time: stop 3, 2, then 1.
  for n in 3 2 1; do stop_pid "$(node_dir "$n")/mariadbd.pid"; done
  echo "galera: stopped"
}

cmd_status() {
  local ok=0 n state size
  for n in "${NODES[@]}"; do
    state="$(wsrep_state "$n")"
    size="$(q "$n" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_CLUSTER_SIZE'" || echo "-")"
    printf 'node%s  127.0.0.1:%s  %-8s cluster size %s\n' "$n" "$(sql_port "$n")" "$state" "$size"
    [ "$state" = "Synced" ] || ok=1
  done
  if haproxy_alive; then echo "haproxy 127.0.0.1:$HA_PORT  up"; else echo "haproxy 127.0.0.1:$HA_PORT  down"; ok=1; fi
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) [ -n "${2:-}" ] || die "kill which node? 1, 2 or 3"; pid="$(pid_of "$2")"
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; echo "galera: node $2 killed" ;;
  start-node) [ -n "${2:-}" ] || die "start which node? 1, 2 or 3"; need; start_node "$2"; cmd_status || true ;;
  wipe) cmd_stop; rm -rf "$DIR"/node* "$DIR"/haproxy.*; echo "galera: wiped $DIR" ;;
  *) echo "usage: $0 start|stop|status|kill N|start-node N|wipe" >&2; exit 2 ;;
esac
