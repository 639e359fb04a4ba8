#!/usr/bin/env bash
# Make a Docker daemon available for the container tests, on a machine with no Docker yet.
#
# Installs docker.io and debootstrap from Debian if missing, starts dockerd if nothing
# answers `docker info`, and waits for it. The daemon is started without a bridge and without
# iptables rules: images are built and containers run with `--network host`, so no private
# address range is created or routed, and test traffic stays on loopback.
#
# Usage: scripts/ensure-docker.sh            (idempotent; exits 0 once `docker info` works)
# Env:   DOCKERD_LOG   where dockerd logs (default /var/log/podcrew-dockerd.log)
#        DOCKER_WAIT_S how long to wait for the daemon (default 60)
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/podcrew-dockerd.log}
DOCKER_WAIT_S=${DOCKER_WAIT_S:-60}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-docker: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  echo "ensure-docker: daemon already running" >&2
  exit 0
fi

# The package may have started its own daemon (with a bridge) through systemd; do not
# fight it, but also do not start a second one on the same socket.
if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd (log: $DOCKERD_LOG)" >&2
  as_root sh -c "nohup dockerd --bridge=none --iptables=false >>'$DOCKERD_LOG' 2>&1 </dev/null &"
fi

deadline=$((SECONDS + DOCKER_WAIT_S))
until docker info >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ensure-docker: dockerd did not answer within ${DOCKER_WAIT_S}s; last log lines:" >&2
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "ensure-docker: $(docker version --format 'daemon {{.Server.Version}}, client {{.Client.Version}}')" >&2
