#!/usr/bin/env bash
# Buildroot post-build script of the router: finishes the root filesystem
# (one root slot) before it is packed into rootfs.squashfs.
#
#   post-build.sh TARGET_DIR
#
# Buildroot exports BINARIES_DIR and BR2_CONFIG to it.
set -euo pipefail

target=${1:?usage: post-build.sh TARGET_DIR}
: "${BINARIES_DIR:?BINARIES_DIR is not set: run from Buildroot}"

fail() {
	echo "post-build.sh: $*" >&2
	exit 1
}

# The daemon and its command line must be in the slot.
for bin in routerd routerctl; do
	[ -x "$target/usr/bin/$bin" ] || fail "$target/usr/bin/$bin is missing: is BR2_PACKAGE_ROUTERD enabled?"
done
# The kernel travels inside the slot, so an update replaces both together.
[ -f "$target/boot/bzImage" ] || [ -f "$target/boot/Image" ] ||
	fail "no kernel in $target/boot: BR2_LINUX_KERNEL_INSTALL_TARGET must be set"

# GRUB (BIOS): keep its first stage for post-image.sh, then drop what the slot
# does not need: the core image has its modules built in and grub.cfg lives
# on the boot partition. GRUB's grub-editenv stays (RAUC switches slots
# with it; the overlay may bring its own in /usr/sbin).
if [ -f "$target/lib/grub/i386-pc/boot.img" ]; then
	cp -f "$target/lib/grub/i386-pc/boot.img" "$BINARIES_DIR/boot.img"
fi
rm -rf "$target/lib/grub" "$target/usr/lib/grub" "$target/boot/grub" "$target/etc/grub.d"
for tool in "$target"/usr/bin/grub-* "$target"/usr/sbin/grub-*; do
	[ -e "$tool" ] || continue
	case ${tool##*/} in
	grub-editenv) ;;
	*) rm -f "$tool" ;;
	esac
done

# The root file system is read-only at run time, and git keeps no empty
# directories, so the overlay cannot carry mount points: create every one
# that /etc/fstab, a systemd mount unit or the overlay's rcS mounts onto.
mount_points() {
	if [ -f "$target/etc/fstab" ]; then
		awk '$1 !~ /^#/ && NF >= 2 && $2 ~ /^\// { print $2 }' "$target/etc/fstab"
	fi
	for unit in "$target"/etc/systemd/system/*.mount "$target"/usr/lib/systemd/system/*.mount; do
		[ -f "$unit" ] || continue
		sed -n 's/^Where=[[:space:]]*//p' "$unit"
	done
	# `mount [-t TYPE] [-o OPTS] WHAT /DIR`: the last word before any
	# redirection, `||`, `&&` or `;`.
	if [ -f "$target/etc/init.d/rcS" ]; then
		grep -oE '(^|[^a-z])mount -[^|&;]*' "$target/etc/init.d/rcS" |
			sed -e 's/[0-9]*>[^ ]*//g' | awk '{ print $NF }' | grep '^/' || true
	fi
}
mount_points | sort -u | while read -r dir; do
	[ "$dir" = / ] && continue
	mkdir -p "$target$dir"
done
