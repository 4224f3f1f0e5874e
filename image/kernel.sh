#!/usr/bin/env bash
# Fetches (or reuses) trixie's current kernel package, unpacked with depmod
# run, and prints the directory that holds it: DIR/root/boot/vmlinuz-<kver>,
# DIR/root/lib/modules/<kver>. The router image and the lab's world VM boot
# the same kernel.
#
#   image/kernel.sh [--refresh]
#
#   --refresh  fetch the package lists anew (and so a newer kernel, if any)
#
# Cached under ${ROUTERD_CACHE:-/var/cache/routerd}, with apt's own lists
# there so the host's apt configuration is not touched:
#   apt-trixie/                   package lists and downloads
#   kernel/<package>_<version>/   the unpacked kernel
# Needs root (apt-get download into the cache).
set -euo pipefail
cache=${ROUTERD_CACHE:-/var/cache/routerd}
refresh=false
case ${1:-} in
--refresh) refresh=true ;;
"") ;;
*) echo "usage: image/kernel.sh [--refresh]" >&2; exit 2 ;;
esac
die() { echo "image/kernel.sh: $*" >&2; exit 1; }

apt_dir=$cache/apt-trixie
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::Status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir/cache" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o "APT::Architecture=amd64" -o "APT::Sandbox::User=root" -o "Debug::NoLocking=true"
)
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/cache"
touch "$apt_dir/status"
cat > "$apt_dir/sources.list" << 'LIST'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
LIST
if $refresh || ! ls "$apt_dir/lists/"*_Packages* > /dev/null 2>&1; then
  echo "== apt: trixie package lists" >&2
  apt-get "${apt_opts[@]}" -qq update >&2
fi
kernel_pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 2> /dev/null |
  sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
kernel_ver=$(apt-cache "${apt_opts[@]}" show "$kernel_pkg" 2> /dev/null | sed -n 's/^Version: //p' | head -1)
if [ -z "$kernel_pkg" ] || [ -z "$kernel_ver" ]; then
  die "cannot find trixie's linux-image-amd64 (apt lists in $apt_dir)"
fi
kdir=$cache/kernel/${kernel_pkg}_$kernel_ver
if [ ! -e "$kdir/.done" ]; then
  echo "== kernel: fetching $kernel_pkg $kernel_ver" >&2
  rm -rf "$kdir" && mkdir -p "$kdir/deb"
  (cd "$kdir/deb" && apt-get "${apt_opts[@]}" -qq download "$kernel_pkg=$kernel_ver" >&2)
  mkdir -p "$kdir/root/lib"
  dpkg-deb -x "$kdir/deb/"*.deb "$kdir/x"
  mv "$kdir/x/boot" "$kdir/root/boot"
  mv "$kdir/x/usr/lib/modules" "$kdir/root/lib/modules"
  rm -rf "$kdir/x" "$kdir/deb"
  kver=$(ls "$kdir/root/lib/modules")
  depmod -b "$kdir/root" "$kver"
  touch "$kdir/.done"
fi
echo "$kdir"
