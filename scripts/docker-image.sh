#!/usr/bin/env bash
# Builds the `cryptchat:local` Docker image: a statically linked release binary in a
# FROM scratch image (the Docker engine here has no base images and cannot pull any).
#
#   scripts/docker-image.sh            # build the binary and the image
#   IMAGE=myname:tag scripts/docker-image.sh
#
# The static build uses its own target dir (target/static) so that it does not invalidate
# the normal build's cache (RUSTFLAGS differ). Afterwards `docker compose build` also works:
# docker/ then holds the binary, and docker-compose.yml builds from there.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-cryptchat:local}"
TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CRYPTCHAT_STATIC_TARGET_DIR:-target/static}"

if ! command -v docker >/dev/null; then
  echo "docker-image.sh: the docker command is missing (install Docker Engine)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker-image.sh: no Docker engine answers (is dockerd running? try: dockerd &)" >&2
  exit 1
fi

echo "== static release build ($TARGET, target dir $CARGO_TARGET_DIR)"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --target "$TARGET" -p cryptchat
BIN="$CARGO_TARGET_DIR/$TARGET/release/cryptchat"

# A scratch image has no dynamic loader and no libc: refuse a binary that needs one.
if command -v readelf >/dev/null && readelf -l "$BIN" | grep -q 'program interpreter'; then
  echo "docker-image.sh: $BIN is dynamically linked; a FROM scratch image cannot run it" >&2
  exit 1
fi

# Without the debug line tables of the release profile: a much smaller image.
if command -v strip >/dev/null; then
  strip --strip-debug -o docker/cryptchat "$BIN"
else
  cp "$BIN" docker/cryptchat
fi
echo "== docker build -t $IMAGE docker/"
docker build -t "$IMAGE" docker/
docker image ls "$IMAGE"
