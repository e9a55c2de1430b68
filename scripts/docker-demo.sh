#!/usr/bin/env bash
# Traffic and a report on the compose network that `docker compose up -d --scale peer=N`
# started from this checkout: every node writes one message in each room, then the script
# shows how many messages each node holds per room, and the bootstrap's view of the lobby.
#
#   scripts/docker-demo.sh            # WAIT=seconds before the report (default 10)
#
# The full scenario (partition, heal, checks, teardown) is the test tests/docker.rs:
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

if [ -z "$("${compose[@]}" ps -q bootstrap)" ]; then
  echo "docker-demo.sh: the network is not up; run: docker compose up -d --scale peer=4" >&2
  exit 1
fi
peers=$("${compose[@]}" ps -q peer | wc -l)
nodes=(bootstrap:1)
for i in $(seq 1 "$peers"); do nodes+=("peer:$i"); done

cli() { # SERVICE:INDEX ARGS...
  local service=${1%%:*} index=${1##*:}
  shift
  "${compose[@]}" exec -T --index "$index" "$service" /cryptchat --data-dir /data "$@"
}

echo "== waiting until the $((peers + 1)) nodes answer"
for n in "${nodes[@]}"; do
  until cli "$n" status >/dev/null 2>&1; do sleep 2; done
done

echo "== every node writes in ${ROOMS[*]}"
for n in "${nodes[@]}"; do
  for room in "${ROOMS[@]}"; do
    printf '%-12s ' "${n/:/-}"
    cli "$n" send "$room" "hello $room from ${n/:/-} at $(date +%T)"
  done
done

echo "== after ${WAIT}s: messages held per node"
sleep "$WAIT"
printf '%-12s' node
for room in "${ROOMS[@]}"; do printf '%8s' "$room"; done
echo
for n in "${nodes[@]}"; do
  printf '%-12s' "${n/:/-}"
  for room in "${ROOMS[@]}"; do
    count=$(cli "$n" --json history "$room" --limit 100000 | grep -c '"author_id"' || true)
    printf '%8s' "$count"
  done
  echo
done
echo
echo "== lobby as the bootstrap node sees it (last 10)"
cli bootstrap:1 history lobby --limit 10
echo
echo "== bootstrap status"
cli bootstrap:1 status
