#!/usr/bin/env bash
# Builds the router's disk image, router-<version>-x86_64.img: a GPT disk
# that boots with GRUB (BIOS), two read-only root slots A and B (xz
# squashfs, each a whole system: Debian trixie's userland, routerd,
# routerctl, the kernel and an initramfs) and a data partition for the
# user's config and state.
#
#   image/build.sh [--out DIR] [--bin-dir DIR] [--refresh] [--xz]
#
#   --out DIR      where the image goes (default: target/image)
#   --bin-dir DIR  take routerd and routerctl from DIR instead of building
#                  them (cargo build --release -p routerd -p routerctl)
#   --refresh      build the trixie root file system and fetch the kernel anew
#                  (the cached ones are otherwise reused; see below)
#   --xz           also write router-<version>-x86_64.img.xz
#
# Needs root (mmdebstrap --mode=root, chroot) and no loop devices or mounts:
# the file systems are made from directories (mksquashfs, mke2fs -d), the
# partition table with sfdisk on the image file, and GRUB's boot code is
# written and patched in place of grub-bios-setup.
#
# Cached under /var/cache/routerd, keyed by their inputs:
#   image-root/           the trixie root file system (trixie-root.sh; keyed
#                         by its package list)
#   kernel/, apt-trixie/  the kernel package, unpacked (image/kernel.sh)
#
# Also written next to the image: the root slot alone
# (router-<version>-x86_64.rootfs.squashfs, the update payload) and
# router-<version>-x86_64.txt (versions and sizes).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
overlay=$repo/buildroot-overlay/board/ipnordic/router/rootfs-overlay
cache=${ROUTERD_CACHE:-/var/cache/routerd}
out=$repo/target/image
refresh=false
compress=false
bin_dir=
while [ $# -gt 0 ]; do
  case $1 in
  --out) out=${2:?--out needs a directory}; shift 2 ;;
  --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
  --refresh) refresh=true; shift ;;
  --xz) compress=true; shift ;;
  *) echo "usage: image/build.sh [--out DIR] [--bin-dir DIR] [--refresh] [--xz]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "image/build.sh: needs root (mmdebstrap --mode=root, chroot)" >&2; exit 2; }

# What the router's root file system holds (Debian trixie packages). No
# systemd: busybox init (docs/image.md says why).
packages=(
  busybox-static # init, the shell tools, the WAN DHCP client (udhcpc), the initramfs
  nftables       # nft 1.1.3: routerd loads the ruleset with it
  dnsmasq-base   # DHCP and DNS for the LAN side
  chrony         # chronyd: the phones' time server, synchronised to the provider
  kmod           # modprobe, depmod
  mount          # mount, umount
  e2fsprogs      # the data partition: mkfs.ext4, e2fsck
  iproute2       # ip, tc: for a person on the console
  conntrack      # the flow table, for a person on the console
)

# Partition sizes in MiB.
bios_mib=1
boot_mib=8
slot_mib=128
data_mib=64

start=$(date +%s)
step() { printf '== %s (%ds)\n' "$*" $(($(date +%s) - start)); }
die() { echo "image/build.sh: $*" >&2; exit 1; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
[ -n "$version" ] || die "no version in [workspace.package] of $repo/Cargo.toml"
name=router-$version-x86_64

# Host tools.
need=()
command -v mmdebstrap > /dev/null || need+=(mmdebstrap)
command -v mksquashfs > /dev/null || need+=(squashfs-tools)
[ -e /usr/lib/grub/i386-pc/boot.img ] || need+=(grub-pc-bin)
command -v grub-mkimage > /dev/null || need+=(grub-common)
command -v sfdisk > /dev/null || need+=(fdisk)
command -v mke2fs > /dev/null || need+=(e2fsprogs)
command -v depmod > /dev/null || need+=(kmod)
command -v xz > /dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

work=$(mktemp -d /tmp/router-image.XXXXXX)
trap '[ -n "${ROUTERD_IMAGE_KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$out" "$cache"

# --- routerd and routerctl ---------------------------------------------------
if [ -z "$bin_dir" ]; then
  step "cargo build --release -p routerd -p routerctl"
  (cd "$repo" && cargo build --release --locked -q -p routerd -p routerctl)
  bin_dir=${CARGO_TARGET_DIR:-$repo/target}/release
fi
for bin in routerd routerctl; do
  [ -x "$bin_dir/$bin" ] || die "no $bin_dir/$bin"
done

# --- the trixie root file system (cached) --------------------------------------
step "trixie root file system: ${packages[*]}"
$refresh && rm -f "$cache/image-root/.routerd-packages"
"$repo/image/trixie-root.sh" "$cache/image-root" "${packages[@]}"

# --- the kernel (cached) --------------------------------------------------------
step "kernel: trixie's linux-image-amd64"
if $refresh; then kdir=$("$repo/image/kernel.sh" --refresh); else kdir=$("$repo/image/kernel.sh"); fi
kernel_pkg=${kdir##*/} kernel_ver=${kdir##*_}
kernel_pkg=${kernel_pkg%_*}
kver=$(ls "$kdir/root/lib/modules")
kmods=$kdir/root/lib/modules/$kver

# --- kernel modules: the list, checked to be closed under dependencies --------
step "kernel $kver: modules from image/kernel-modules.txt"
mapfile -t modules < <(grep -v '^[[:space:]]*$' "$repo/image/kernel-modules.txt")
declare -A listed=()
for m in "${modules[@]}"; do listed[${m//-/_}]=1; done
declare -A files=()
for m in "${modules[@]}"; do
  deps=$(modprobe -d "$kdir/root" -S "$kver" --show-depends "$m" 2>&1) ||
    die "kernel $kver has no module $m (image/kernel-modules.txt): $deps"
  while read -r kind path _; do
    case $kind in
    builtin) ;;
    insmod)
      base=$(basename "$path" .ko.xz)
      [ -n "${listed[${base//-/_}]:-}" ] ||
        die "$m needs $base, which image/kernel-modules.txt does not list"
      files[$path]=1
      ;;
    esac
  done <<< "$deps"
done

# --- the root slot ------------------------------------------------------------
step "root slot: tree"
slot=$work/slot
cp -a "$cache/image-root" "$slot"
rm -f "$slot/.routerd-packages"
# Nothing on the router runs these: locale converters, perl (the package
# manager's scripts), the package manager's caches and lists.
rm -rf "$slot"/usr/lib/x86_64-linux-gnu/gconv "$slot"/usr/lib/x86_64-linux-gnu/perl-base \
  "$slot"/usr/lib/x86_64-linux-gnu/perl "$slot"/usr/share/perl "$slot"/usr/share/perl5 \
  "$slot"/usr/bin/perl* "$slot"/usr/bin/localedef "$slot"/usr/share/i18n \
  "$slot"/usr/share/info "$slot"/usr/share/lintian "$slot"/usr/share/zsh "$slot"/usr/share/fish \
  "$slot"/var/cache/* "$slot"/var/lib/apt/lists/* "$slot"/var/log/* "$slot"/etc/resolv.conf
# The root is read-only: what must be written lives in /run, /tmp and /data.
rm -rf "$slot/var/log" "$slot/var/tmp" "$slot/etc/mtab"
ln -s /run/log "$slot/var/log"
ln -s /tmp "$slot/var/tmp"
ln -s /proc/self/mounts "$slot/etc/mtab"
mkdir -p "$slot/data" "$slot/grub"
cp -a "$overlay/." "$slot/"
# busybox-static installs no applet links: init and the few commands the
# inittab and a person on the console use.
for applet in init reboot poweroff halt syslogd logread; do
  [ -e "$slot/usr/sbin/$applet" ] || ln -s ../bin/busybox "$slot/usr/sbin/$applet"
done
install -m 0755 "$bin_dir/routerd" "$bin_dir/routerctl" "$slot/usr/sbin/"
install -m 0644 "$repo/image/kernel-modules.txt" "$slot/usr/lib/routerd/kernel-modules.txt"

# The kernel and its modules (only the listed ones).
mkdir -p "$slot/usr/lib/modules/$kver/kernel" "$slot/boot"
for f in modules.builtin modules.builtin.modinfo modules.order; do
  cp "$kmods/$f" "$slot/usr/lib/modules/$kver/"
done
for path in "${!files[@]}"; do
  rel=${path#"$kmods"/}
  mkdir -p "$slot/usr/lib/modules/$kver/$(dirname "$rel")"
  cp "$path" "$slot/usr/lib/modules/$kver/$rel"
done
chroot "$slot" depmod "$kver"
cp "$kdir/root/boot/vmlinuz-$kver" "$slot/boot/vmlinuz"
cp "$kdir/root/boot/config-$kver" "$slot/boot/config"

# The initramfs: busybox, the init script, the disk and squashfs drivers.
step "initramfs"
initramfs=$work/initramfs
mkdir -p "$initramfs/bin" "$initramfs/etc" "$initramfs/lib/modules" "$initramfs/usr/lib/routerd"
cp "$slot/usr/bin/busybox" "$initramfs/bin/busybox"
cp "$overlay/usr/lib/routerd/initramfs-init" "$initramfs/init"
cp "$overlay/usr/lib/routerd/partlabels" "$initramfs/usr/lib/routerd/partlabels"
: > "$initramfs/etc/modules"
for m in virtio_blk squashfs; do
  deps=$(modprobe -d "$kdir/root" -S "$kver" --show-depends "$m")
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    base=$(basename "$path" .ko.xz)
    grep -qx "$base" "$initramfs/etc/modules" && continue
    xz -dc "$path" > "$initramfs/lib/modules/$base.ko"
    echo "$base" >> "$initramfs/etc/modules"
  done <<< "$deps"
done
(cd "$initramfs" && find . | sort | "$slot/usr/bin/busybox" cpio -o -H newc 2> /dev/null) |
  gzip -9 -n > "$slot/boot/initrd.img"

git_rev=$(git -C "$repo" describe --always --dirty 2> /dev/null || echo unknown)
cat > "$slot/etc/router-release" << EOF
VERSION=$version
GIT=$git_rev
KERNEL=$kver ($kernel_pkg $kernel_ver)
BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

step "root slot: mksquashfs (xz)"
mksquashfs "$slot" "$work/rootfs.squashfs" -comp xz -Xbcj x86 -b 256K -noappend \
  -no-xattrs -quiet -no-progress > /dev/null
slot_bytes=$(stat -c %s "$work/rootfs.squashfs")
[ "$slot_bytes" -le $((slot_mib * 1024 * 1024)) ] ||
  die "the root slot is $slot_bytes bytes; its partition has $slot_mib MiB"

# --- boot and data partitions ----------------------------------------------------
step "boot and data partitions"
mkdir -p "$work/boot" "$work/data"
cp "$overlay/usr/lib/routerd/boot/grub.cfg" "$work/boot/grub.cfg"
sh "$overlay/usr/sbin/grub-editenv" "$work/boot/grubenv" set \
  "ORDER=A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
mke2fs -q -t ext2 -b 1024 -L boot -d "$work/boot" "$work/boot.ext2" "${boot_mib}M" > /dev/null
mke2fs -q -t ext4 -L data -d "$work/data" "$work/data.ext4" "${data_mib}M" > /dev/null

# --- the disk ------------------------------------------------------------------------
step "disk: GPT, GRUB"
mib=2048 # sectors
p1=$mib
p2=$((p1 + bios_mib * mib))
p3=$((p2 + boot_mib * mib))
p4=$((p3 + slot_mib * mib))
p5=$((p4 + slot_mib * mib))
end=$((p5 + data_mib * mib))
img=$work/$name.img
truncate -s $(((end + mib) * 512)) "$img"
# Fixed GUIDs from the version: the same inputs give the same table.
guid() { echo -n "$name $1" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/'; }
sfdisk -q "$img" << EOF
label: gpt
label-id: $(guid disk)
first-lba: 2048
start=$p1, size=$((bios_mib * mib)), type=21686148-6449-6E6F-744E-656564454649, name="bios", uuid=$(guid bios)
start=$p2, size=$((boot_mib * mib)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot", uuid=$(guid boot)
start=$p3, size=$((slot_mib * mib)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="rootfs-a", uuid=$(guid rootfs-a)
start=$p4, size=$((slot_mib * mib)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="rootfs-b", uuid=$(guid rootfs-b)
start=$p5, size=$((data_mib * mib)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data", uuid=$(guid data)
EOF
put() { dd if="$1" of="$img" bs=512 seek="$2" conv=notrunc,sparse status=none; }
put "$work/boot.ext2" $p2
put "$work/rootfs.squashfs" $p3
put "$work/rootfs.squashfs" $p4
put "$work/data.ext4" $p5

# GRUB: core.img in the BIOS boot partition, boot.img's code in the MBR,
# patched the way grub-bios-setup would: boot.img's kernel_sector (0x5c)
# is core.img's first sector, its 0x66-0x67 (the boot drive check) become
# two NOPs, and diskboot.img's block list (core.img 0x1f4) starts at the
# sector after.
grub_modules=(biosdisk part_gpt ext2 squash4 xzio gzio loadenv test regexp linux normal
  configfile serial terminal echo sleep reboot halt cat ls)
grub-mkimage -O i386-pc -p '(,gpt2)/' -o "$work/core.img" "${grub_modules[@]}"
core_bytes=$(stat -c %s "$work/core.img")
[ "$core_bytes" -le $((bios_mib * 1024 * 1024)) ] || die "GRUB's core.img ($core_bytes bytes) does not fit in $bios_mib MiB"
le64() { printf '%016x' "$1" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\\x\8\\x\7\\x\6\\x\5\\x\4\\x\3\\x\2\\x\1/'; }
patch() { printf '%b' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
put "$work/core.img" $p1
patch "$img" $((p1 * 512 + 0x1f4)) "$(le64 $((p1 + 1)))"
cp /usr/lib/grub/i386-pc/boot.img "$work/boot.img"
patch "$work/boot.img" $((0x5c)) "$(le64 $p1)"
patch "$work/boot.img" $((0x66)) '\x90\x90'
dd if="$work/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none

# GRUB itself reads the slots: the kernel must be readable through its
# squash4 and the config through its ext2.
step "checking with grub-fstest"
for part in gpt3 gpt4; do
  grub-fstest "$img" cmp "(loop0,$part)/boot/vmlinuz" "$slot/boot/vmlinuz" ||
    die "GRUB cannot read the kernel in $part"
done
grub-fstest "$img" cmp "(loop0,gpt2)/grubenv" "$work/boot/grubenv" || die "GRUB cannot read grubenv"

# --- results -------------------------------------------------------------------------
mv "$img" "$out/$name.img"
cp "$work/rootfs.squashfs" "$out/$name.rootfs.squashfs"
if $compress; then
  step "xz of the image"
  xz -T0 -6 -c "$out/$name.img" > "$out/$name.img.xz"
fi
took=$(($(date +%s) - start))
img_bytes=$(stat -c %s "$out/$name.img")
img_used=$(du -B1 "$out/$name.img" | cut -f1)
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
{
  echo "image:          $out/$name.img"
  echo "version:        $version ($git_rev)"
  echo "kernel:         $kver ($kernel_pkg $kernel_ver), $(wc -l < "$repo/image/kernel-modules.txt") modules"
  echo "packages:       ${packages[*]}"
  echo "image size:     $(mb "$img_bytes") ($(mb "$img_used") allocated, sparse)"
  echo "root slot:      $(mb "$slot_bytes") xz squashfs (partition: $slot_mib MiB; tree $(du -sm "$slot" | cut -f1) MiB)"
  echo "kernel:         $(mb "$(stat -c %s "$slot/boot/vmlinuz")"), initramfs $(mb "$(stat -c %s "$slot/boot/initrd.img")")"
  $compress && echo "image.xz:       $(mb "$(stat -c %s "$out/$name.img.xz")")"
  echo "build time:     ${took} s"
} | tee "$out/$name.txt"
