#!/usr/bin/env bash
# Build podcrew's Python base image from Debian packages alone, for machines that cannot pull
# from any container registry (air-gapped, or only a Debian mirror and PyPI reachable).
#
# debootstrap (bookworm, minbase) + python3, python3-venv, python3-pip, ca-certificates,
# packed with `docker import`. The result is a drop-in BASE_IMAGE for the services' Dockerfile:
#
#   scripts/build-base-image.sh --mirror http://deb.debian.org/debian --ca-bundle /etc/ssl/certs/ca-certificates.crt
#   docker build --build-arg BASE_IMAGE=podcrew/base:bookworm --build-arg SERVICE=writer-agent .
#
# Its python3 is Debian's 3.11 (the default BASE_IMAGE, python:3.12-slim, has 3.12); the
# Dockerfile works with both.
#
# Options:
#   --tag TAG          image tag (default podcrew/base:bookworm)
#   --mirror URL       Debian mirror (default http://deb.debian.org/debian)
#   --suite SUITE      Debian suite (default bookworm)
#   --ca-bundle PATH   add this PEM bundle to the image's trust store, for TLS-intercepting
#                      proxies between the build and PyPI (pip and uv then trust it)
#   --force            rebuild even if TAG already exists
set -euo pipefail

TAG=podcrew/base:bookworm
MIRROR=http://deb.debian.org/debian
SUITE=bookworm
CA_BUNDLE=
FORCE=0
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --ca-bundle) CA_BUNDLE=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-base-image: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ "$FORCE" -eq 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "build-base-image: $TAG exists (use --force to rebuild)" >&2
  exit 0
fi
if [ -n "$CA_BUNDLE" ] && [ ! -r "$CA_BUNDLE" ]; then
  echo "build-base-image: cannot read CA bundle $CA_BUNDLE" >&2
  exit 2
fi
command -v debootstrap >/dev/null 2>&1 || {
  echo "build-base-image: debootstrap not found (apt-get install debootstrap)" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || { echo "build-base-image: debootstrap needs root" >&2; exit 1; }

ROOTFS=$(mktemp -d /tmp/podcrew-rootfs.XXXXXX)
cleanup() {
  # debootstrap may leave /proc or /sys mounted when it fails half-way.
  for m in proc sys dev/pts dev; do umount -l "$ROOTFS/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

echo "build-base-image: debootstrap $SUITE from $MIRROR" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2

if [ -n "$CA_BUNDLE" ]; then
  # Kept under /usr/local/share/ca-certificates so any later update-ca-certificates keeps it.
  install -m 0644 "$CA_BUNDLE" "$ROOTFS/usr/local/share/ca-certificates/podcrew-extra-ca.crt"
  chroot "$ROOTFS" update-ca-certificates >&2
fi

# Slim it: no apt lists, caches, docs or man pages are needed at run time.
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
  "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* 2>/dev/null || true
# The image keeps the mirror it was built from, so `apt-get` inside it works the same way.
echo "deb $MIRROR $SUITE main" >"$ROOTFS/etc/apt/sources.list"

echo "build-base-image: importing as $TAG" >&2
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  --message "podcrew base: debootstrap $SUITE minbase + $PACKAGES" \
  - "$TAG" >/dev/null
docker image ls "$TAG" >&2
