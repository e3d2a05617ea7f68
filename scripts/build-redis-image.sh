#!/usr/bin/env bash
# Builds the local Docker image spiral-redis:local without any registry: a root filesystem holding
# this machine's redis-server (Debian's package) and the shared libraries it links, imported with
# `docker import`. The container tests use it with SPIRAL_REDIS_IMAGE=spiral-redis:local.
#
#   scripts/build-redis-image.sh [IMAGE]      (default spiral-redis:local; REBUILD=1 forces a rebuild)
#
# Why not `docker build`: every Dockerfile starts FROM an image, and no registry is reachable here.
# testcontainers pulls only when the engine answers 404 for the image, so a local image is enough.
set -euo pipefail
image=${1:-spiral-redis:local}

if ! docker info >/dev/null 2>&1; then
  echo "build-redis-image: no Docker engine answers; nothing built" >&2
  exit 1
fi
if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-redis-image: $image already exists ($(docker image inspect -f '{{.Id}}' "$image" | cut -c1-19)); skipped (REBUILD=1 rebuilds)"
  exit 0
fi

server=$(command -v redis-server || true)
if [ -z "$server" ]; then
  echo "build-redis-image: redis-server is not installed (apt-get install redis-server)" >&2
  exit 1
fi
# Debian's /usr/bin/redis-server is a symlink to redis-check-rdb: the binary picks its role from
# argv[0], so it must be copied under the name redis-server.
real=$(readlink -f "$server")

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/tmp" "$root/data" "$root/etc"
chmod 1777 "$root/tmp"
cp "$real" "$root/usr/bin/redis-server"
version=$("$root/usr/bin/redis-server" --version | grep -oE 'v=[^ ]+' || echo 'v=?')
# Every library the dynamic linker loads, and the linker itself, at the paths the binary expects.
ldd "$real" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
  cp -L --parents "$lib" "$root"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

# Foreground, logging to stdout: the testcontainers Redis module waits for "Ready to accept connections".
tar -C "$root" -c . | docker import \
  --change 'CMD ["redis-server","--protected-mode","no","--save",""]' \
  --change 'EXPOSE 6379/tcp' \
  --change 'WORKDIR /data' \
  --message "redis-server $version from $(dpkg -S "$real" 2>/dev/null | cut -d: -f1 || echo "$real")" \
  - "$image" >/dev/null

echo "build-redis-image: built $image from $real ($version, $(du -sh "$root" | cut -f1) root filesystem)"
