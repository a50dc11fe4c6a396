#!/usr/bin/env bash
# Instructions per request under callgrind: deterministic for a given binary,
# unlike throughput on a shared machine. M1 (POST GetUser) and M2 (WebSocket
# GetUser round trip), 8 connections.
#
#   bash examples/callgrind.sh            # SECONDS_ON=6
#   OUT=/tmp/cg bash examples/callgrind.sh  # keeps callgrind.out.m1/m2 for
#                                           # callgrind_annotate --inclusive=yes
#
# Starts convgate under `valgrind --tool=callgrind --instr-atstart=no`,
# warms up with the load generator, switches instrumentation on for
# SECONDS_ON seconds of `loadgen`, and divides the instructions counted by
# the requests served in that window.
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
for scn in ${ONLY:-m1 m2}; do
  CONVGATE_BOOTSTRAP_TOKEN=$TOKEN CONVGATE_RATE_LIMIT=0 CONVGATE_MAX_SOCKETS_PER_TOKEN=100 CONVGATE_LOG=warn \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.$scn" \
    "$BIN/convgate" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data-$scn" >/dev/null 2>"$WORK/vg.$scn" &
  PID=$!; wait_port
  lg --scenario "$scn" --duration 2 --warmup 1 >/dev/null
  callgrind_control -i on "$PID" >/dev/null 2>&1
  ops=$(lg --scenario "$scn" --duration "$SECONDS_ON" --warmup 0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["operations"])')
  callgrind_control -i off "$PID" >/dev/null 2>&1
  kill -INT "$PID"; wait "$PID" 2>/dev/null || true; PID=
  ir=$(grep -E '^totals:' "$WORK/cg.$scn" | awk '{print $2}')
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$WORK/cg.$scn" "$OUT/callgrind.out.$scn"; fi
  python3 -c "print(f'$scn: {$ir} instructions over {$ops} requests = {$ir/$ops/1000:.1f}k per request')"
done
