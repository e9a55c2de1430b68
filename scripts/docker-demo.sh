#!/usr/bin/env bash
# Drives the compose network started with `docker compose up -d --scale peer=N`: every node
# writes one message in each room, then the script prints who holds what (a delivery report).
#
#   scripts/docker-demo.sh                # project of the current directory (cryptchat-style
#   COMPOSE_PROJECT_NAME=foo scripts/docker-demo.sh      # compose defaults apply)
#
# The full scenario with a partition, checks and teardown is the test tests/docker.rs:
#   cargo test -p cryptchat --test e2e_docker -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "docker-demo.sh: Docker Compose is missing" >&2
  exit 1
fi
ROOMS=(lobby ops)
WAIT="${WAIT:-10}"

peers=$("${compose[@]}" ps -q peer | wc -l)
if [ "$("${compose[@]}" ps -q bootstrap | wc -l)" -eq 0 ]; then
  echo "docker-demo.sh: the network is not up; run: docker compose up -d --scale peer=4" >&2
  exit 1
fi
nodes=("bootstrap 1")
for i in $(seq 1 "$peers"); do nodes+=("peer $i"); done

cli() { # service index args...
  local service=$1 index=$2
  shift 2
  "${compose[@]}" exec -T --index "$index" "$service" /cryptchat --data-dir /data "$@"
}

echo "== waiting until all $((peers + 1)) nodes answer"
for n in "${nodes[@]}"; do
  # shellcheck disable=SC2086
  until cli $n status >/dev/null 2>&1; do sleep 2; done
done

echo "== every node writes in ${ROOMS[*]}"
for n in "${nodes[@]}"; do
  for room in "${ROOMS[@]}"; do
    # shellcheck disable=SC2086
    cli $n send "$room" "hello $room from ${n/ /-} at $(date +%T)"
  done
done

echo "== waiting ${WAIT}s, then the report"
sleep "$WAIT"
for room in "${ROOMS[@]}"; do
  total=0
  for n in "${nodes[@]}"; do
    # shellcheck disable=SC2086
    count=$(cli $n --json history "$room" --limit 100000 | grep -c '"author_id"' || true)
    printf '%-8s %-12s %4s messages\n' "$room" "${n/ /-}" "$count"
    total=$((total + count))
  done
done
echo
echo "== last messages in lobby on bootstrap"
cli bootstrap 1 history lobby --limit 10
echo
# shellcheck disable=SC2086
cli bootstrap 1 status
