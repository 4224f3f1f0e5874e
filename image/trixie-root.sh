#!/usr/bin/env bash
# Builds (or reuses) a minimal Debian trixie root filesystem with the given
# packages: the userland the router ships (nft 1.1.3, dnsmasq 2.91, ...).
# Tests chroot into it so they exercise the versions that ship; the firmware
# image is built from the same suite.
#
#   image/trixie-root.sh DIR [PACKAGE...]
#
# The result is cached: DIR/.routerd-packages records the package list, and a
# root whose list matches is reused as it is. Needs root (mmdebstrap --mode=root).
set -euo pipefail
dir=${1:?usage: image/trixie-root.sh DIR [PACKAGE...]}
shift
packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
stamp="$dir/.routerd-packages"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages" ]; then
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap
}
rm -rf "$dir.new"
# merged-usr hook: without it usrmerge drags in perl. No docs, man pages, locales.
mmdebstrap --quiet --mode=root --variant=essential \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  ${packages:+--include="$packages"} \
  trixie "$dir.new" > "$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
echo "$packages" > "$dir.new/.routerd-packages"
rm -rf "$dir"
mv "$dir.new" "$dir"
