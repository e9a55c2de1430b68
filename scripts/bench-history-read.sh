#!/usr/bin/env bash
# Does a long history read hold up the node? Starts a node (alice) on DIR with BIN, fills
# her direct room with contact bob with N messages if it is empty, then three times reads
# the whole room through the local API while asking for the node's status every 50 ms,
# and prints how long the read took and the slowest status answer during it; last, how
# long listing the room's files takes (POST /v1/history with "kind": "file").
#
# usage: scripts/bench-history-read.sh BIN DIR [N]
#   e.g. scripts/bench-history-read.sh target/release/cryptchat /tmp/hist/alice 2000
# Run two builds on the same DIR to compare them on the same journal. Needs curl, python3.
set -euo pipefail
BIN=$1
DIR=$2
N=${3:-2000}
export CRYPTCHAT_PASSWORD='violet tugboat meander 77 quasar'
mkdir -p "$(dirname "$DIR")"
"$BIN" --data-dir "$DIR" run --username alice --listen /ip4/127.0.0.1/tcp/0 >"$DIR.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT
for _ in $(seq 150); do
  [ -f "$DIR/api.json" ] && "$BIN" --data-dir "$DIR" status >/dev/null 2>&1 && break
  sleep 0.2
done
ADDR=$(python3 -c "import json; print(json.load(open('$DIR/api.json'))['addr'])")
TOKEN=$(cat "$DIR/api.token")
api() {
  curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' "$@"
}
if ! "$BIN" --data-dir "$DIR" --json contact list | grep -q '"bob"'; then
  CODE=$(CRYPTCHAT_PASSWORD='bob is a fine fellow 1999 xyz' "$BIN" --json id --username bob |
    python3 -c "import json, sys; print(json.load(sys.stdin)['contact_code'])")
  "$BIN" --data-dir "$DIR" contact add bob "$CODE" >/dev/null
  for i in $(seq "$N"); do
    api -X POST -d "{\"contact\": \"bob\", \"text\": \"note $i\"}" "http://$ADDR/v1/dm" >/dev/null
  done
fi
for _ in 1 2 3; do
  api -X POST -d '{"room": "@bob", "limit": 100000}' "http://$ADDR/v1/history" >"$DIR.read" &
  READ=$!
  sleep 0.05
  worst=0
  for _ in $(seq 10); do
    t=$(api "http://$ADDR/v1/status")
    worst=$(python3 -c "print(max($worst, $t))")
    sleep 0.05
  done
  wait $READ
  echo "history read $(cat "$DIR.read") s; slowest status answer during it $worst s"
  sleep 1
done
echo "files listed in $(api -X POST -d '{"room": "@bob", "limit": 100000, "kind": "file"}' "http://$ADDR/v1/history") s"
