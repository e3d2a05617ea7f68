# Sourced by scripts/test.sh: chooses how the tests get a real Redis and exports the choice.
#   REDIS_URL set            → that server (nothing else to prepare)
#   a Docker engine answers  → container mode: the local image spiral-redis:local (built here)
#   otherwise                → process mode: redis-server on an ephemeral port per test binary
# redis-server is installed from Debian's packages when missing (both modes need its binary).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server from Debian's packages"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  else
    echo "redis-server is missing and cannot be installed here (need root and apt-get)" >&2
  fi
fi
if [ -n "${REDIS_URL:-}" ]; then
  export SPIRAL_REDIS_MODE=${SPIRAL_REDIS_MODE:-url}
elif [ "${SPIRAL_REDIS_MODE:-}" != process ] && docker info >/dev/null 2>&1; then
  export SPIRAL_REDIS_IMAGE=${SPIRAL_REDIS_IMAGE:-spiral-redis:local}
  if [ "$SPIRAL_REDIS_IMAGE" = spiral-redis:local ]; then
    scripts/build-redis-image.sh
  fi
  export SPIRAL_REDIS_MODE=container
else
  export SPIRAL_REDIS_MODE=process
fi
