#!/usr/bin/env bash
# Compares PresenceMesh's membership layer with HashiCorp memberlist, 10 members each, all on
# one machine: crash detection on loopback, false death verdicts under random UDP loss, and
# healing after a 5|5 partition. Needs root, for network namespaces and iptables.
#
# Environment (defaults in brackets):
#   MEASURES        which measures to run, from "crash loss heal" [all three]
#   ROUNDS          crash rounds per system [5]
#   FP_SECONDS      length of each false-positive run, in seconds [300]
#   LOSSES          UDP loss probabilities for the false-positive runs ["0.05 0.20"]
#   PARTITION_SECONDS  how long the partition lasts, in seconds [40]
#   HEAL_TIMEOUT    how long to wait for a merge after the partition ends, in seconds [60]
#   WORK_DIR        directory for logs and outputs [a new /tmp/mlbench-run.* directory]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
measures="${MEASURES:-crash loss heal}"
nodes=10
rounds="${ROUNDS:-5}"
fp_seconds="${FP_SECONDS:-300}"
losses="${LOSSES:-0.05 0.20}"
partition_seconds="${PARTITION_SECONDS:-40}"
heal_timeout="${HEAL_TIMEOUT:-60}"
work="${WORK_DIR:-$(mktemp -d /tmp/mlbench-run.XXXXXX)}"
build_dir=/tmp/mlbench-build
go_dir=/tmp/mlbench-go
namespace="mlbench-$$"
group_a_gid=4242

if [ "$(id -u)" -ne 0 ]; then
  echo "run.sh needs root for ip netns and iptables; run it as root or with sudo." >&2
  exit 1
fi
mkdir -p "$work"

# --- Processes and namespace, cleaned up on every exit -------------------------------------
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  ip netns del "$namespace" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command in the background under timeout(1) and records the PID of timeout, which
# passes a stop signal on to the command. Usage: start_bounded SECONDS OUTPUT_FILE COMMAND...
last_pid=""
start_bounded() {
  local limit="$1" output="$2"
  shift 2
  timeout --kill-after=10 "$limit" "$@" >"$output" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# Waits for a PID started by start_bounded and drops it from the cleanup list; returns its exit
# status without stopping the script.
wait_pid() {
  local status=0 pid
  wait "$1" || status=$?
  local remaining=()
  for pid in "${pids[@]}"; do
    if [ "$pid" != "$1" ]; then
      remaining+=("$pid")
    fi
  done
  pids=("${remaining[@]}")
  return "$status"
}

namespace_up() {
  ip netns add "$namespace"
  ip netns exec "$namespace" ip link set lo up
}

namespace_down() {
  ip netns del "$namespace" 2>/dev/null || true
}

in_namespace() {
  ip netns exec "$namespace" "$@"
}

# Waits up to SECONDS for a line matching PATTERN in FILE.
wait_for_line() {
  local file="$1" pattern="$2" seconds="$3" waited=0
  while ! grep -q "$pattern" "$file" 2>/dev/null; do
    if [ "$waited" -ge $((seconds * 10)) ]; then
      echo "timed out after ${seconds} s waiting for '$pattern' in $file" >&2
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# --- Packages and builds --------------------------------------------------------------------
"$repo/scripts/setup.sh" golang-go golang-github-hashicorp-memberlist-dev iptables iproute2

mkdir -p "$go_dir"
(cd "$here" && GO111MODULE=off GOPATH="$go_dir:/usr/share/gocode" GOCACHE="$go_dir/cache" \
  go build -o "$go_dir/memberlist-bench" main.go)
(cd "$repo" && swift build -c release --scratch-path "$build_dir" --product presence-node)
(cd "$repo" && swift build -c release --scratch-path "$build_dir" --product presencectl)
memberlist_bench="$go_dir/memberlist-bench"
presence_node="$build_dir/release/presence-node"
python="$(command -v python3)"
cluster="$here/presence_cluster.py"

echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine $(nproc) processors, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
echo "go $(go version | cut -d' ' -f3), memberlist $(dpkg-query -W -f='${Version}' golang-github-hashicorp-memberlist-dev)"
echo "presencemesh commit $(git -C "$repo" rev-parse --short HEAD), uncommitted changes in: $(git -C "$repo" diff --name-only | tr '\n' ' ')"
echo "work_dir $work"

# --- a) Crash detection on loopback ---------------------------------------------------------
measure_crash() {
  local limit=$((rounds * 90 + 120))
  echo "== crash memberlist nodes $nodes rounds $rounds"
  start_bounded "$limit" "$work/crash-memberlist.out" "$memberlist_bench" -mode crash -nodes "$nodes" -rounds "$rounds"
  wait_pid "$last_pid" || echo "memberlist crash run failed, exit $?"
  cat "$work/crash-memberlist.out"

  echo "== crash presencemesh nodes $nodes rounds $rounds"
  start_bounded "$limit" "$work/crash-presencemesh.out" "$python" "$cluster" crash \
    --binary "$presence_node" --dir "$work/crash-presencemesh" --nodes "$nodes" --rounds "$rounds"
  wait_pid "$last_pid" || echo "presencemesh crash run failed, exit $?"
  cat "$work/crash-presencemesh.out"
}

# --- b) False death verdicts under random UDP loss ------------------------------------------
add_loss() {
  in_namespace iptables -A INPUT -p udp -m statistic --mode random --probability "$1" -j DROP
}

dropped_packets() {
  in_namespace iptables -L INPUT -v -n -x | awk '/DROP/ { print $1 " of them dropped" }'
}

measure_loss() {
  local loss limit=$((fp_seconds + 180))
  for loss in $losses; do
    echo "== loss memberlist nodes $nodes udp_loss $loss seconds $fp_seconds"
    namespace_up
    add_loss "$loss"
    start_bounded "$limit" "$work/loss-$loss-memberlist.out" ip netns exec "$namespace" \
      "$memberlist_bench" -mode steady -nodes "$nodes" -duration "${fp_seconds}s"
    wait_pid "$last_pid" || echo "memberlist loss run failed, exit $?"
    cat "$work/loss-$loss-memberlist.out"
    echo "udp packets $(dropped_packets)"
    namespace_down

    echo "== loss presencemesh nodes $nodes udp_loss $loss seconds $fp_seconds"
    namespace_up
    add_loss "$loss"
    start_bounded "$limit" "$work/loss-$loss-presencemesh.out" ip netns exec "$namespace" "$python" "$cluster" steady \
      --binary "$presence_node" --dir "$work/loss-$loss-presencemesh" --nodes "$nodes" --duration "$fp_seconds"
    wait_pid "$last_pid" || echo "presencemesh loss run failed, exit $?"
    cat "$work/loss-$loss-presencemesh.out"
    echo "udp packets $(dropped_packets)"
    namespace_down
  done
}

# --- c) Partition heal ----------------------------------------------------------------------
# Processes of side A run with group ID $group_a_gid and side B with group 0, so the owner match
# tells the sides apart even for TCP connections from ephemeral ports. Packets from each side to
# the other side's gossip ports, UDP and TCP, are marked in mangle OUTPUT (the only place the owner
# is known) and dropped in INPUT. A DROP in OUTPUT would fail the sender's sendto with EPERM, and
# memberlist 0.2.2 takes a send error as a local fault and skips the probe without suspecting.
partition_mark=0x4d4c
partition_on() {
  local side_a="$1" side_b="$2" protocol
  for protocol in udp tcp; do
    in_namespace iptables -t mangle -A OUTPUT -p "$protocol" -m owner --gid-owner "$group_a_gid" \
      -m multiport --dports "$side_b" -j MARK --set-mark "$partition_mark"
    in_namespace iptables -t mangle -A OUTPUT -p "$protocol" -m owner ! --gid-owner "$group_a_gid" \
      -m multiport --dports "$side_a" -j MARK --set-mark "$partition_mark"
  done
  in_namespace iptables -A INPUT -m mark --mark "$partition_mark" -j DROP
}

partition_off() {
  echo "partition dropped $(in_namespace iptables -L INPUT -v -n -x | awk '/DROP/ { print $1 }') packets"
  in_namespace iptables -D INPUT -m mark --mark "$partition_mark" -j DROP
  in_namespace iptables -t mangle -F OUTPUT
}

now_ms() {
  date +%s%3N
}

# Prints the first time at or after START_MS at which a memberlist serve output reports that every
# member of the process counts WANT live members, or nothing.
first_whole_ms() {
  awk -v start="$1" -v want="$2" '$1 == "status" && $2 >= start && $3 == want { print $2; exit }' "$3"
}

measure_heal_memberlist() {
  local half=$((nodes / 2)) limit=$((partition_seconds + heal_timeout + 150))
  local serve_seconds=$((partition_seconds + heal_timeout + 120))
  echo "== heal memberlist nodes $nodes partition_s $partition_seconds"
  namespace_up
  start_bounded "$limit" "$work/heal-memberlist-a.out" ip netns exec "$namespace" \
    setpriv --regid "$group_a_gid" --clear-groups \
    "$memberlist_bench" -mode serve -nodes "$half" -prefix ml-a- -duration "${serve_seconds}s" \
    -memberlist-log "$work/heal-memberlist-a.log"
  local pid_a="$last_pid"
  wait_for_line "$work/heal-memberlist-a.out" '^ready' 60
  local ports_a seed
  ports_a="$(awk '$1 == "ports" { print $2 }' "$work/heal-memberlist-a.out")"
  seed="127.0.0.1:${ports_a%%,*}"
  start_bounded "$limit" "$work/heal-memberlist-b.out" ip netns exec "$namespace" \
    "$memberlist_bench" -mode serve -nodes "$half" -prefix ml-b- -join "$seed" -expect "$nodes" \
    -duration "${serve_seconds}s" -memberlist-log "$work/heal-memberlist-b.log"
  local pid_b="$last_pid"
  wait_for_line "$work/heal-memberlist-b.out" '^ready' 60
  local ports_b joined
  ports_b="$(awk '$1 == "ports" { print $2 }' "$work/heal-memberlist-b.out")"
  joined="$(now_ms)"
  sleep 2
  if [ -z "$(first_whole_ms "$joined" "$nodes" "$work/heal-memberlist-a.out")" ]; then
    echo "memberlist side A did not count $nodes live members before the partition"
  fi

  partition_on "$ports_a" "$ports_b"
  sleep "$partition_seconds"
  echo "before heal: side A $(grep '^status' "$work/heal-memberlist-a.out" | tail -1), side B $(grep '^status' "$work/heal-memberlist-b.out" | tail -1) (status UNIX_MS MIN_LIVE MAX_LIVE)"
  partition_off
  local healed
  healed="$(now_ms)"
  sleep "$heal_timeout"
  local whole_a whole_b
  whole_a="$(first_whole_ms "$healed" "$nodes" "$work/heal-memberlist-a.out")"
  whole_b="$(first_whole_ms "$healed" "$nodes" "$work/heal-memberlist-b.out")"
  if [ -n "$whole_a" ] && [ -n "$whole_b" ]; then
    echo "heal_ms $(( (whole_a > whole_b ? whole_a : whole_b) - healed ))"
  else
    echo "heal_ms not_merged_within_${heal_timeout}_s; at the end: side A $(grep '^status' "$work/heal-memberlist-a.out" | tail -1), side B $(grep '^status' "$work/heal-memberlist-b.out" | tail -1)"
  fi
  kill "$pid_a" "$pid_b" 2>/dev/null || true
  wait_pid "$pid_a" || true
  wait_pid "$pid_b" || true
  namespace_down
}

measure_heal_presencemesh() {
  local limit=$((partition_seconds + heal_timeout + 150))
  echo "== heal presencemesh nodes $nodes partition_s $partition_seconds"
  namespace_up
  rm -f "$work/heal-presencemesh-ports" "$work/heal-presencemesh-healed"
  start_bounded "$limit" "$work/heal-presencemesh.out" ip netns exec "$namespace" "$python" "$cluster" heal \
    --binary "$presence_node" --dir "$work/heal-presencemesh" --nodes "$nodes" \
    --group-a-gid "$group_a_gid" --ports-file "$work/heal-presencemesh-ports" \
    --heal-file "$work/heal-presencemesh-healed" --timeout "$heal_timeout" \
    --partition-timeout $((partition_seconds + 60))
  local pid="$last_pid"
  wait_for_line "$work/heal-presencemesh-ports" ',' 90
  partition_on "$(sed -n 1p "$work/heal-presencemesh-ports")" "$(sed -n 2p "$work/heal-presencemesh-ports")"
  sleep "$partition_seconds"
  partition_off
  touch "$work/heal-presencemesh-healed"
  wait_pid "$pid" || echo "presencemesh heal run failed, exit $?"
  cat "$work/heal-presencemesh.out"
  namespace_down
}

for measure in $measures; do
  case "$measure" in
    crash) measure_crash ;;
    loss) measure_loss ;;
    heal) measure_heal_memberlist; measure_heal_presencemesh ;;
    *) echo "unknown measure '$measure' in MEASURES; use crash, loss or heal" >&2; exit 2 ;;
  esac
done
echo "done $(date -u +%Y-%m-%dT%H:%M:%SZ)"
