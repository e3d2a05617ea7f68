#!/usr/bin/env bash
# Autobahn|Testsuite conformance of the WebSocket command channel (SPEC §1.4, RFC 6455).
#
#   scripts/autobahn.sh            run the suite, compare with conformance/autobahn/expected-results.json
#   scripts/autobahn.sh --update   the same, but first rewrite expected-results.json from the run
#
# Installs the suite (Python 2.7 only) into a cache dir once, builds `spiral` with
# `--features conformance`, serves the command channel in echo mode on free loopback ports, runs
# `wstest -m fuzzingclient` with conformance/autobahn/fuzzingclient.json, stops the server, and
# compares every case with the committed expected results (conformance/autobahn/compare.py).
# Exit 0 only when every case matches and is acceptable. See conformance/autobahn/README.md.
#
# Environment:
#   CARGO_TARGET_DIR   default ./target; the conformance binary is copied to $CARGO_TARGET_DIR/conformance/
#   AUTOBAHN_CACHE     where the suite is installed (default $CARGO_TARGET_DIR/autobahn-venv)
#   AUTOBAHN_OUT       reports and logs of the run (default $CARGO_TARGET_DIR/autobahn), emptied first
#   AUTOBAHN_PYTHON2   a Python 2.7 interpreter (default pyenv's 2.7.18, else python2.7 on PATH)
#   AUTOBAHN_DOCKER_IMAGE  run wstest from this image instead (crossbario/autobahn-testsuite on
#                      GitHub Actions); no Python 2.7 needed then
#   CI                 when set, a missing Python 2.7 fails the script instead of skipping it
#   AUTOBAHN_FEATURES  extra cargo features of the server build (`planted-bugs` for the planted-bug
#                      demonstration, with SPIRAL_PLANTED_BUG passed on to the server)
set -euo pipefail

update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: scripts/autobahn.sh [--update]" >&2
    exit 2
    ;;
esac

# Paths given relative to where the script was started stay relative to that place.
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
CARGO_TARGET_DIR=$(abspath "${CARGO_TARGET_DIR:-$(dirname "$0")/../target}")
cache=$(abspath "${AUTOBAHN_CACHE:-$CARGO_TARGET_DIR/autobahn-venv}")
out=$(abspath "${AUTOBAHN_OUT:-$CARGO_TARGET_DIR/autobahn}")
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR
here=conformance/autobahn
started=$SECONDS

ci_set() { [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; }
loud() {
  echo "!!! ================================================================================" >&2
  printf '!!! %s\n' "$@" >&2
  echo "!!! ================================================================================" >&2
}

# --- the suite -----------------------------------------------------------------------------------
if [ -n "${AUTOBAHN_DOCKER_IMAGE:-}" ]; then
  # The suite's own image (GitHub Actions can pull it); host networking reaches the loopback server.
  if ! docker image inspect "$AUTOBAHN_DOCKER_IMAGE" >/dev/null 2>&1; then
    loud "AUTOBAHN CONFORMANCE NOT RUN: image $AUTOBAHN_DOCKER_IMAGE is not present (docker pull it first)"
    exit 1
  fi
  wstest_cmd=(docker run --rm --network host --user "$(id -u):$(id -g)" -v "$out:$out" -w "$out"
    "$AUTOBAHN_DOCKER_IMAGE" wstest)
  suite_version=$(docker run --rm "$AUTOBAHN_DOCKER_IMAGE" python -c \
    'import autobahntestsuite; print(autobahntestsuite.version)' 2>/dev/null || echo unknown)
  echo "autobahn: suite from image $AUTOBAHN_DOCKER_IMAGE (version $suite_version)"
else
  py2=${AUTOBAHN_PYTHON2:-}
  if [ -z "$py2" ]; then
    if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/2.7.18/bin/python" ]; then
      py2="$(pyenv root)/versions/2.7.18/bin/python"
    elif command -v python2.7 >/dev/null 2>&1; then
      py2=$(command -v python2.7)
    fi
  fi
  if [ -z "$py2" ] || ! "$py2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
    loud "AUTOBAHN CONFORMANCE NOT RUN: no Python 2.7 found (looked for AUTOBAHN_PYTHON2," \
      "pyenv's 2.7.18 and python2.7 on PATH). Autobahn|Testsuite runs on Python 2.7 only." \
      "Install it with: pyenv install 2.7.18"
    if ci_set; then
      exit 1
    fi
    echo "autobahn: skipped (CI is not set, so this is not an error)" >&2
    exit 0
  fi

  wstest=$cache/venv/bin/wstest
  stamp=$cache/installed.sha256
  want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
  if [ -x "$wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "autobahn: suite already installed in $cache"
  else
    echo "autobahn: installing Autobahn|Testsuite into $cache (Python: $py2)"
    rm -rf "$cache"
    mkdir -p "$cache"
    pip_quiet=(--quiet --disable-pip-version-check)
    export PIP_NO_PYTHON_VERSION_WARNING=1
    "$py2" -m pip install "${pip_quiet[@]}" --target "$cache/virtualenv" 'virtualenv<20.22'
    PYTHONPATH="$cache/virtualenv" "$py2" -m virtualenv --quiet --no-download "$cache/venv"
    # Inside the venv, not with --target: --target breaks the `zope` namespace package.
    "$cache/venv/bin/python" -m pip install "${pip_quiet[@]}" -r "$here/requirements.txt"
    "$wstest" --autobahnversion >/dev/null
    echo "$want" >"$stamp"
  fi
  suite_version=$("$cache/venv/bin/python" -c 'import autobahntestsuite; print(autobahntestsuite.version)')
  wstest_cmd=("$wstest")
fi

# --- the server: a conformance build, copied out of target/release ---
# The copy keeps this binary out of the way of later steps: the next plain `cargo build --release`
# (or `cargo run --release`) links target/release/spiral again from its own, echo-less build.
cargo build --release --locked -p spiral-server --bin spiral --features "conformance${AUTOBAHN_FEATURES:+,$AUTOBAHN_FEATURES}"
bin=$CARGO_TARGET_DIR/conformance/spiral
mkdir -p "$(dirname "$bin")"
cp "$CARGO_TARGET_DIR/release/spiral" "$bin.tmp"
mv -f "$bin.tmp" "$bin"

rm -rf "$out"
mkdir -p "$out"
ports=$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
read -r http_port ws_port stream_port <<<"$ports"
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

server_pid=
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Echo mode; anonymous WebSockets (every case is a new connection, and a token's jti is single
# use); limits raised so that the suite measures the protocol layer, not the rate limiter; the
# message size limit above the 16 MiB of the 9.* cases. Heartbeat and idle timer as in production.
env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
  SPIRAL_LOG=warn \
  ${SPIRAL_PLANTED_BUG:+SPIRAL_PLANTED_BUG=$SPIRAL_PLANTED_BUG} \
  SPIRAL_WS_ECHO=1 \
  JWT_SECRET="$secret" \
  SPIRAL_STORAGE=memory \
  SPIRAL_HTTP_ADDR="127.0.0.1:$http_port" \
  SPIRAL_WS_ADDR="127.0.0.1:$ws_port" \
  SPIRAL_STREAM_ADDR="127.0.0.1:$stream_port" \
  ALLOW_ANONYMOUS_WS=true \
  WS_RATE_LIMIT=1000000 WS_RATE_WINDOW=1 \
  HTTP_RATE_LIMIT=1000000,1 SPIRAL_RATE_LIMIT=1000000,1 \
  WS_SEND_QUEUE=100000 \
  SPIRAL_MAX_MESSAGE_SIZE=$((32 * 1024 * 1024)) \
  "$bin" serve >"$out/spiral.log" 2>&1 &
server_pid=$!

health=http://127.0.0.1:$http_port/health
for i in $(seq 100); do
  if curl -fsS -o /dev/null --max-time 1 "$health" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null || [ "$i" -eq 100 ]; then
    echo "autobahn: the server did not come up on $health; its log:" >&2
    cat "$out/spiral.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "autobahn: spiral (echo mode) on ws://127.0.0.1:$ws_port; running the fuzzingclient (suite $suite_version)"

# The committed spec with this run's URL and output directory.
python3 - "$here/fuzzingclient.json" "$out/fuzzingclient.json" "ws://127.0.0.1:$ws_port" "$out/reports/servers" <<'EOF'
import json, sys
src, dst, url, outdir = sys.argv[1:]
with open(src) as f:
    spec = json.load(f)
spec["outdir"] = outdir
spec["servers"][0]["url"] = url
with open(dst, "w") as f:
    json.dump(spec, f, indent=2)
EOF

suite_started=$SECONDS
if ! (cd "$out" && timeout 1800 "${wstest_cmd[@]}" -m fuzzingclient -s "$out/fuzzingclient.json") >"$out/wstest.log" 2>&1; then
  echo "autobahn: wstest failed; the end of its log ($out/wstest.log):" >&2
  tail -n 40 "$out/wstest.log" >&2
  exit 1
fi
suite_s=$((SECONDS - suite_started))
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "autobahn: the server died during the run; its log:" >&2
  cat "$out/spiral.log" >&2
  exit 1
fi
stop_server

compare=(python3 "$here/compare.py" --spec "$here/fuzzingclient.json"
  --expected "$here/expected-results.json" --suite-version "$suite_version"
  "$out/reports/servers/index.json")
if [ "$update" -eq 1 ]; then
  compare+=(--update)
fi
status=0
"${compare[@]}" || status=$?
echo "autobahn: suite ${suite_s}s, total $((SECONDS - started))s; reports in $out/reports/servers/index.html"
exit "$status"
