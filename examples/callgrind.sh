#!/usr/bin/env bash
# Instructions per request under callgrind: deterministic for a given binary,
# unlike throughput on a shared machine. M1 (POST GetUser) and M2 (WebSocket
# GetUser round trip), 8 connections.
#
#   bash examples/callgrind.sh            # SECONDS_ON=6
#   OUT=/tmp/cg bash examples/callgrind.sh  # keeps callgrind.out.m1, .m1floor, .m1bare, … for
#                                           # callgrind_annotate --inclusive=yes
#
# Starts convgate under `valgrind --tool=callgrind --instr-atstart=no`,
# warms up with the load generator, switches instrumentation on for
# SECONDS_ON seconds of `loadgen`, and divides the instructions counted by
# the requests served in that window; then the same for the protocol's floor
# (`examples/common/floor.rs`) and the bare echo (BASELINES= skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_ON=${SECONDS_ON:-6}
PORT=${PORT:-18556}
TOKEN=0123456789abcdef0123456789abcdef01234567
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
cargo build --release --quiet --bin convgate --examples
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not come up" >&2; exit 1
}
lg() {
  "$BIN/examples/loadgen" --addr "127.0.0.1:$PORT" --token "$TOKEN" --connections 8 "$@"
}
# One server under callgrind: $1 = scenario, $2 = loadgen target, the rest
# the server's command line.
measure() {
  local scn=$1 target=$2 out="$WORK/cg.$1.$2"; shift 2
  CONVGATE_BOOTSTRAP_TOKEN=$TOKEN CONVGATE_RATE_LIMIT=0 CONVGATE_MAX_SOCKETS_PER_TOKEN=100 CONVGATE_LOG=warn \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" >/dev/null 2>"$WORK/vg.$scn.$target" &
  PID=$!; wait_port
  lg --scenario "$scn" --target "$target" --duration 2 --warmup 1 >/dev/null
  callgrind_control -i on "$PID" >/dev/null 2>&1
  ops=$(lg --scenario "$scn" --target "$target" --duration "$SECONDS_ON" --warmup 0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["operations"])')
  callgrind_control -i off "$PID" >/dev/null 2>&1
  # The bare servers end on SIGTERM, convgate drains on SIGINT.
  kill -INT "$PID"; kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=
  ir=$(grep -E '^totals:' "$out" | awk '{print $2}')
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$out" "$OUT/callgrind.out.$scn${target/gateway/}"; fi
  python3 -c "print(f'$scn $target: {$ir} instructions over {$ops} requests = {$ir/$ops/1000:.2f}k per request')"
}
for scn in ${ONLY:-m1 m2}; do
  measure "$scn" gateway "$BIN/convgate" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data-$scn"
  if [ -n "${BASELINES-1}" ]; then
    echo_bin=$BIN/examples/bare_http_echo
    [ "$scn" = m2 ] && echo_bin=$BIN/examples/bare_ws_echo
    measure "$scn" floor "$echo_bin" "127.0.0.1:$PORT" floor
    measure "$scn" bare "$echo_bin" "127.0.0.1:$PORT"
  fi
done
