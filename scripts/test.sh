#!/usr/bin/env bash
# The test command of the README, runnable on a machine that has only Go
# and apt: it installs what the tests start themselves (redis-server for
# the Redis tests, Node.js and npm for the Socket.IO compatibility test,
# Chromium for the dashboard's browser test) and makes their absence a
# failure rather than a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${need[@]}"
fi

export REQUIRE_REDIS=1 REQUIRE_NODE=1 REQUIRE_BROWSER=1
exec go test -count=1 -timeout 30m ./... "$@"
