#!/usr/bin/env bash
# Buildroot post-image script of the router: assembles the disk image
# router-<version>-x86_64.img from rootfs.squashfs, GRUB and genimage.cfg.
#
#   post-image.sh BINARIES_DIR
#
# Buildroot runs it from its own source directory and exports HOST_DIR,
# BUILD_DIR and BR2_EXTERNAL_IPNORDIC_PATH. No loop devices, no mounts.
set -euo pipefail

images=${1:?usage: post-image.sh BINARIES_DIR}
: "${HOST_DIR:?HOST_DIR is not set: run from Buildroot}"
: "${BR2_EXTERNAL_IPNORDIC_PATH:?BR2_EXTERNAL_IPNORDIC_PATH is not set: run from Buildroot}"
board=$(cd "$(dirname "$0")" && pwd)

# Where genimage.cfg puts the BIOS boot partition (offset = 1M), in sectors.
BIOS_BOOT_LBA=2048
# Size of the boot partition (GRUB's files and the slot state).
BOOT_SIZE=32M

fail() {
	echo "post-image.sh: $*" >&2
	exit 1
}

for f in rootfs.squashfs grub.img boot.img; do
	[ -f "$images/$f" ] || fail "$images/$f is missing (built by Buildroot; boot.img is copied by post-build.sh)"
done

# Write an unsigned little-endian 64-bit VALUE at byte OFFSET of FILE.
put_le64() {
	local file=$1 offset=$2 value=$3 bytes="" i
	for i in 0 1 2 3 4 5 6 7; do
		bytes+=$(printf '\\x%02x' $(((value >> (8 * i)) & 0xff)))
	done
	printf '%b' "$bytes" | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
}

# GRUB's boot.img and core image are installed by grub-bios-setup, which
# writes where the core image lies; genimage only copies files. So do its
# part: boot.img loads the core image's first sector from the BIOS boot
# partition (0x5c) and keeps the boot drive the BIOS gave it (NOPs at 0x66);
# the core image's first sector loads the rest from the next sector (0x1f4).
cp -f "$images/boot.img" "$images/boot-bios.img"
cp -f "$images/grub.img" "$images/grub-bios.img"
put_le64 "$images/boot-bios.img" $((0x5c)) "$BIOS_BOOT_LBA"
printf '\x90\x90' | dd of="$images/boot-bios.img" bs=1 seek=$((0x66)) conv=notrunc status=none
put_le64 "$images/grub-bios.img" $((0x1f4)) $((BIOS_BOOT_LBA + 1))

# The boot partition, ext2 as in the Debian-based image (rcS mounts it so
# on /grub): grub.cfg and grubenv at its top, both slots good, A first.
bootdir="$images/boot-part"
rm -rf "$bootdir"
mkdir -p "$bootdir"
cp "$board/grub.cfg" "$bootdir/grub.cfg"
editenv="$HOST_DIR/bin/grub-editenv"
[ -x "$editenv" ] || fail "$editenv is missing (host GRUB tools, built with BR2_TARGET_GRUB2)"
"$editenv" "$bootdir/grubenv" create
"$editenv" "$bootdir/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
rm -f "$images/boot.ext2"
"$HOST_DIR/sbin/mke2fs" -q -t ext2 -b 1024 -L boot -d "$bootdir" "$images/boot.ext2" "$BOOT_SIZE" ||
	fail "mke2fs of the boot partition failed (needs BR2_PACKAGE_HOST_E2FSPROGS)"

support/scripts/genimage.sh -c "$board/genimage.cfg"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$BR2_EXTERNAL_IPNORDIC_PATH/../Cargo.toml" | head -n 1)
[ -n "$version" ] || fail "no version = \"...\" in $BR2_EXTERNAL_IPNORDIC_PATH/../Cargo.toml"
mv -f "$images/router-x86_64.img" "$images/router-$version-x86_64.img"
echo "post-image.sh: $images/router-$version-x86_64.img"
