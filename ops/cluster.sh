#!/usr/bin/env bash
# A local Fleetlog cluster on loopback: three nats-server nodes forming one
# JetStream cluster (ops/cluster/nats-{1,2,3}.conf: clients 4222-4224,
# routes 6222-6224, monitoring 8222-8224, domain `local`) and three fleetd
# processes (ops/cluster/{api-1,api-2,projector-1}.yaml: gRPC/HTTP
# 7400/7401, 7410/7411, 7420/7421).
#
#   ops/cluster.sh up       start what is not running, wait until it serves
#   ops/cluster.sh status   each process, and each stream's leader and replicas
#   ops/cluster.sh down     stop everything (fleetd first), by PID
#
# Stores, logs and PID files live in FLEETLOG_CLUSTER_DIR (default
# ./data/cluster); `down` keeps them, so the next `up` resumes the same
# streams. fleetd is $CARGO_TARGET_DIR/debug/fleetd (build it with
# `cargo build --bin fleetd`); FLEETLOG_BOOTSTRAP_ADMIN_KEY passes through.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./ops/env.sh

state=${FLEETLOG_CLUSTER_DIR:-./data/cluster}
mkdir -p "$state"
state=$(cd "$state" && pwd)
fleetd_bin="$CARGO_TARGET_DIR/debug/fleetd"

nats_nodes=(nats-1 nats-2 nats-3)
fleetds=(api-1 api-2 projector-1)
declare -A role=([api-1]=api [api-2]=api [projector-1]=projector)
declare -A ports=(
  [nats-1]="client 4222, cluster 6222, monitor 8222"
  [nats-2]="client 4223, cluster 6223, monitor 8223"
  [nats-3]="client 4224, cluster 6224, monitor 8224"
  [api-1]="grpc 7400, http 7401"
  [api-2]="grpc 7410, http 7411"
  [projector-1]="grpc 7420, http 7421"
)
monitor_port() { echo $((8221 + ${1#nats-})); }

# The PID in $state/NAME.pid if that process is alive and still runs NAME's
# config file (a PID reused by another process after a reboot is not ours).
live_pid() {
  local name=$1 pidfile="$state/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "ops/cluster/$name\." || return 1
  echo "$pid"
}

tail_log() { tail -n "${2:-15}" "$state/$1.log" 2>/dev/null | sed 's/^/    /'; }

# Runs a python3 snippet on a monitoring endpoint's JSON; fails quietly when
# the node does not answer.
jsz() {
  local port=$1 query=$2 script=$3
  curl -sf --max-time 2 "http://127.0.0.1:$port$query" | python3 -c "$script" 2>/dev/null
}

# "ok" once the meta leader sees both other nodes as current peers: before
# that, creating an R3 stream can fail for want of peers.
meta_ready_script='
import json, sys
meta = json.load(sys.stdin).get("meta_cluster") or {}
peers = meta.get("replicas") or []
current = [p for p in peers if p.get("current") and not p.get("offline")]
print("ok" if meta.get("leader") and len(current) == 2 else "no")'

start_nats() {
  local name pid
  for name in "${nats_nodes[@]}"; do
    if pid=$(live_pid "$name"); then
      echo "$name: already running (PID $pid)"
      continue
    fi
    mkdir -p "$state/$name/store"
    NATS_STORE_DIR="$state/$name/store" nohup nats-server -c "ops/cluster/$name.conf" \
      >>"$state/$name.log" 2>&1 </dev/null &
    echo $! >"$state/$name.pid"
    echo "$name: started (PID $!, ${ports[$name]})"
  done
}

wait_for_jetstream() {
  local deadline=$((SECONDS + 30)) name pid leader
  while :; do
    for name in "${nats_nodes[@]}"; do
      if ! pid=$(live_pid "$name"); then
        echo "$name exited; its log ends:" >&2
        tail_log "$name" >&2
        return 1
      fi
    done
    leader=$(jsz 8222 /jsz 'import json,sys; print((json.load(sys.stdin).get("meta_cluster") or {}).get("leader",""))' || true)
    if [ -n "$leader" ] && [ "$(jsz "$(monitor_port "$leader")" /jsz "$meta_ready_script" || true)" = ok ]; then
      echo "JetStream: meta leader $leader, all three nodes current"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "JetStream did not form within 30 s (meta leader: ${leader:-none}); nats-1's log ends:" >&2
      tail_log nats-1 >&2
      return 1
    fi
    sleep 0.5
  done
}

# Starts one fleetd and waits (60 s at most) for its `fleetd ready` line.
start_fleetd() {
  local name=$1 pid log="$state/$1.log" from deadline
  if pid=$(live_pid "$name"); then
    echo "$name: already running (PID $pid)"
    return 0
  fi
  # Only lines written by this run count as its ready line.
  touch "$log"
  from=$(($(wc -l <"$log") + 1))
  mkdir -p "$state/$name"
  FLEETLOG_DATA_DIR="$state/$name" RUST_LOG="${RUST_LOG:-info}" \
    nohup "$fleetd_bin" "${role[$name]}" --config "ops/cluster/$name.yaml" \
    >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$state/$name.pid"
  deadline=$((SECONDS + 60))
  while :; do
    if tail -n "+$from" "$log" | grep -q "fleetd ready grpc="; then
      echo "$name: ready (PID $pid, ${ports[$name]})"
      tail -n "+$from" "$log" | grep -o "fleetd bootstrap admin key (shown once, keep it safe): .*" || true
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      local rc=0
      wait "$pid" 2>/dev/null || rc=$?
      rm -f "$state/$name.pid"
      echo "$name: fleetd ${role[$name]} exited with status $rc before it was ready; its log ends:" >&2
      tail -n "+$from" "$log" | tail -n 10 | sed 's/^/    /' >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$name: no \`fleetd ready\` line within 60 s (PID $pid still runs; ops/cluster.sh down stops it); its log ends:" >&2
      tail -n "+$from" "$log" | tail -n 10 | sed 's/^/    /' >&2
      return 1
    fi
    sleep 0.2
  done
}

# SIGTERM, then SIGKILL after $2 seconds.
stop() {
  local name=$1 grace=$2 pid i
  if ! pid=$(live_pid "$name"); then
    echo "$name: not running"
    rm -f "$state/$name.pid"
    return 0
  fi
  kill -TERM "$pid"
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    echo "$name: killed (PID $pid did not stop within $grace s of SIGTERM)"
  else
    echo "$name: stopped (PID $pid)"
  fi
  rm -f "$state/$name.pid"
}

streams_script='
import json, sys
me = sys.argv[1]
for account in json.load(sys.stdin).get("account_details") or []:
    for s in account.get("stream_detail") or []:
        cluster = s.get("cluster") or {}
        # Only the leader tracks its followers; the others would print stale peers.
        if cluster.get("leader") != me:
            continue
        state = s.get("state") or {}
        peers = []
        for p in cluster.get("replicas") or []:
            health = "current" if p.get("current") else "behind"
            if p.get("offline"):
                health = "offline"
            # active is 0 for a peer the leader has not heard from (since it led).
            seen = "seen %.1f s ago" % (p["active"] / 1e9) if p.get("active") else "not seen"
            peers.append("%s %s, lag %s, %s" % (p.get("name"), health, p.get("lag", 0), seen))
        print("  %-28s %8s msgs  leader %s; %s" % (
            account.get("name", "") + "/" + s.get("name", ""), state.get("messages", 0), me,
            "; ".join(peers) or "no followers"))'

status() {
  local name pid leader
  for name in "${nats_nodes[@]}" "${fleetds[@]}"; do
    if pid=$(live_pid "$name"); then
      printf '%-12s up    PID %-8s %s\n' "$name" "$pid" "${ports[$name]}"
    else
      printf '%-12s down  %-12s %s\n' "$name" "" "${ports[$name]}"
    fi
  done
  leader=""
  for name in "${nats_nodes[@]}"; do
    leader=$(jsz "$(monitor_port "$name")" /jsz 'import json,sys; print((json.load(sys.stdin).get("meta_cluster") or {}).get("leader",""))' || true)
    [ -n "$leader" ] && break
  done
  echo "JetStream meta leader: ${leader:-none}"
  echo "streams (from each stream leader's /jsz):"
  for name in "${nats_nodes[@]}"; do
    live_pid "$name" >/dev/null || continue
    curl -sf --max-time 2 "http://127.0.0.1:$(monitor_port "$name")/jsz?streams=true" |
      python3 -c "$streams_script" "$name" || true
  done
}

case "${1:-}" in
  up)
    if ! command -v nats-server >/dev/null; then
      echo "nats-server is not on PATH: run ops/setup.sh" >&2
      exit 1
    fi
    start_nats
    wait_for_jetstream
    echo "NATS: FLEETLOG_NATS_URL=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    if [ ! -x "$fleetd_bin" ]; then
      echo "fleetd is not built ($fleetd_bin): cargo build --bin fleetd; the NATS cluster is up, ops/cluster.sh down stops it" >&2
      exit 1
    fi
    failed=0
    # One after another: the first one bootstraps the region (and prints the
    # admin key when none is given), the others find it done.
    for name in "${fleetds[@]}"; do
      start_fleetd "$name" || failed=1
    done
    if [ $failed = 1 ]; then
      echo "some fleetd processes did not start (see above); what runs stays up, ops/cluster.sh down stops it" >&2
      exit 1
    fi
    ;;
  down)
    for name in "${fleetds[@]}"; do stop "$name" 30; done
    for name in "${nats_nodes[@]}"; do stop "$name" 15; done
    ;;
  status)
    status
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
