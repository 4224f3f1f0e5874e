#!/usr/bin/env bash
# Consistency check of the Buildroot external tree (buildroot-overlay/).
# Buildroot itself is not fetched here, so the tree is never built in CI;
# this proves instead that it holds together:
#
#   - external.desc, Config.in and external.mk are well formed and every file
#     they name exists; every package is sourced and has its .mk;
#   - every path a defconfig names through $(BR2_EXTERNAL_IPNORDIC_PATH)
#     exists, scripts are executable, and the root filesystem overlay is the
#     one image/ builds the Debian-based image with;
#   - linux.fragment is valid Kconfig syntax, and every kernel module the
#     image ships (image/kernel-modules.txt) is covered by an option of the
#     fragment, through modules-kconfig.txt; the SIP helper is absent (F2);
#   - genimage.cfg, grub.cfg, post-image.sh and the GRUB boot partition of
#     the defconfig agree on partitions, numbers and slot UUIDs, and RAUC's
#     system.conf in the overlay names partitions that exist;
#   - routerd's recipe builds the workspace this tree lives in, and the
#     overlay starts routerd from where the recipe installs it;
#   - the scripts are shellcheck-clean (when shellcheck is installed).
#
#   buildroot-overlay/check.sh [--ci] [--modules FILE]... [--kernel-tree DIR]
#
#   --ci             what the image build provides (image/kernel-modules.txt,
#                    the overlay, image/ scripts using it) must be there; run
#                    it so after the image build. Without it, their absence
#                    is reported as pending and is not an error.
#   --modules FILE   also cover these modules: a list, one per line, or the
#                    output of lsmod (for example read inside the running
#                    image). May be given more than once.
#   --kernel-tree D  an unpacked Debian linux-image package (D/boot/config-*,
#                    D/usr/lib/modules/*/): every symbol and module named
#                    here must exist in that kernel (catches misspellings).
#
# Exits 0 when consistent, 1 with one line per problem otherwise.

# Literal $(...) in single quotes are make syntax being matched, not shell;
# error() prints, it does not write the files being read.
# shellcheck disable=SC2016,SC2094
set -uo pipefail

tree=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$tree/.." && pwd)
board_rel=board/ipnordic/router
board=$tree/$board_rel
overlay_rel=$board_rel/rootfs-overlay
fragment=$board/linux.fragment
table=$board/modules-kconfig.txt
image_modules=$repo/image/kernel-modules.txt

ci=0
kernel_tree=""
extra_modules=()
while [ $# -gt 0 ]; do
	case $1 in
	--ci) ci=1 ;;
	--modules)
		[ $# -ge 2 ] || { echo "check.sh: --modules needs a file" >&2; exit 2; }
		extra_modules+=("$2")
		shift
		;;
	--kernel-tree)
		[ $# -ge 2 ] || { echo "check.sh: --kernel-tree needs a directory" >&2; exit 2; }
		kernel_tree=$2
		shift
		;;
	-h | --help)
		sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) echo "check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done

errors=0
error() {
	echo "error: $*"
	errors=$((errors + 1))
}
ok() { echo "ok: $*"; }
note() { echo "note: $*"; }
# Something the image build provides: an error with --ci, pending without.
pending() {
	if [ "$ci" = 1 ]; then
		error "$*"
	else
		echo "pending: $*"
	fi
}
rel() { echo "${1#"$repo"/}"; }

# ---------------------------------------------------------------- external.desc
name=""
if [ ! -f "$tree/external.desc" ]; then
	error "buildroot-overlay/external.desc is missing"
else
	name=$(sed -n 's/^name:[[:space:]]*//p' "$tree/external.desc")
	desc=$(sed -n 's/^desc:[[:space:]]*//p' "$tree/external.desc")
	if ! [[ $name =~ ^[A-Za-z0-9_]+$ ]]; then
		error "external.desc: 'name: ' must be one word of [A-Za-z0-9_], found '$name'"
	fi
	[ -n "$desc" ] || error "external.desc: no 'desc: ' line"
	[ -n "$name" ] && ok "external.desc names the tree $name"
fi
ext_var="BR2_EXTERNAL_${name}_PATH"

# Every BR2_EXTERNAL_*_PATH in the tree must be this tree's.
while IFS= read -r hit; do
	error "$hit: uses a BR2_EXTERNAL variable of another tree (this one is $ext_var)"
done < <(grep -rnoE 'BR2_EXTERNAL_[A-Za-z0-9_]+_PATH' "$tree" --include='*.mk' --include='Config.in' \
	--include='*_defconfig' --include='*.sh' --exclude=check.sh 2>/dev/null |
	grep -v ":$ext_var\$" | sed "s|^$repo/||")

# Replace this tree's variable (make or Kconfig spelling) by its directory.
resolve() {
	local s=$1
	s=${s//"\$($ext_var)"/$tree}
	s=${s//"\${$ext_var}"/$tree}
	s=${s//"\$$ext_var"/$tree}
	echo "$s"
}

# ------------------------------------------------------- Config.in, packages
sourced=()
if [ ! -f "$tree/Config.in" ]; then
	error "buildroot-overlay/Config.in is missing"
else
	while read -r path; do
		file=$(resolve "$path")
		if [ ! -f "$file" ]; then
			error "Config.in sources $path, which does not exist"
		else
			sourced+=("$file")
		fi
	done < <(sed -n 's/^[[:space:]]*source[[:space:]]*"\(.*\)"/\1/p' "$tree/Config.in")
	ok "Config.in sources ${#sourced[@]} file(s), all present"
fi
for dir in "$tree"/package/*/; do
	[ -d "$dir" ] || continue
	pkg=$(basename "$dir")
	upper=$(echo "$pkg" | tr 'a-z-' 'A-Z_')
	if [ ! -f "$dir/Config.in" ]; then
		error "package/$pkg has no Config.in"
	elif ! grep -q "^config BR2_PACKAGE_$upper\$" "$dir/Config.in"; then
		error "package/$pkg/Config.in does not define BR2_PACKAGE_$upper"
	fi
	found=0
	for f in "${sourced[@]}"; do [ "$f" = "${dir}Config.in" ] && found=1; done
	[ "$found" = 1 ] || error "package/$pkg/Config.in is not sourced from Config.in: the package cannot be selected"
	if [ ! -f "$dir/$pkg.mk" ]; then
		error "package/$pkg has no $pkg.mk"
	else
		grep -qE '^\$\(eval \$\((host-)?[a-z0-9-]*package\)\)' "$dir/$pkg.mk" ||
			error "package/$pkg/$pkg.mk does not end in \$(eval \$(...-package))"
		grep -q "^${upper}_" "$dir/$pkg.mk" || error "package/$pkg/$pkg.mk sets no ${upper}_ variable"
	fi
done

# ----------------------------------------------------------------- external.mk
if [ ! -f "$tree/external.mk" ]; then
	error "buildroot-overlay/external.mk is missing"
else
	included=0
	while read -r pattern; do
		# $(sort $(wildcard X)) or a plain path: list what it names.
		inner=$(echo "$pattern" | sed -e 's/^\$(sort \$(wildcard \(.*\)))$/\1/' -e 's/^\$(wildcard \(.*\))$/\1/')
		glob=$(resolve "$inner")
		# shellcheck disable=SC2086 # the pattern is a glob on purpose
		matches=$(compgen -G "$glob" || true)
		if [ -z "$matches" ]; then
			error "external.mk includes $pattern, which names no file"
		else
			included=$((included + $(echo "$matches" | wc -l)))
		fi
	done < <(sed -n 's/^-\{0,1\}include[[:space:]]\{1,\}//p' "$tree/external.mk")
	for dir in "$tree"/package/*/; do
		[ -d "$dir" ] || continue
		pkg=$(basename "$dir")
		grep -q 'package/\*/\*\.mk' "$tree/external.mk" || grep -q "package/$pkg/$pkg.mk" "$tree/external.mk" ||
			error "external.mk does not include package/$pkg/$pkg.mk"
	done
	ok "external.mk includes $included file(s), all present"
fi

# ------------------------------------------------------------------ defconfigs
defconfigs=("$tree"/configs/*_defconfig)
[ -f "${defconfigs[0]}" ] || { error "no configs/*_defconfig"; defconfigs=(); }
overlay_seen=0
for defconfig in "${defconfigs[@]}"; do
	dc=$(rel "$defconfig")
	lineno=0
	while IFS= read -r line; do
		lineno=$((lineno + 1))
		[[ -z $line || $line =~ ^#\ BR2_[A-Z0-9_]+\ is\ not\ set$ || $line =~ ^# ]] && continue
		[[ $line =~ ^BR2_[A-Za-z0-9_]+=(y|\".*\"|-?[0-9]+|0x[0-9a-fA-F]+)$ ]] ||
			error "$dc:$lineno: not a Buildroot option line: $line"
	done <"$defconfig"
	dup=$(sed -n 's/^\(BR2_[A-Za-z0-9_]*\)=.*/\1/p; s/^# \(BR2_[A-Za-z0-9_]*\) is not set$/\1/p' "$defconfig" | sort | uniq -d)
	[ -z "$dup" ] || error "$dc: set more than once: $(echo "$dup" | tr '\n' ' ')"

	value() { sed -n "s/^$1=\"\(.*\)\"\$/\1/p" "$defconfig"; }
	# Every path given through the tree's variable must exist.
	paths=0
	while IFS='=' read -r opt val; do
		val=${val#\"}
		val=${val%\"}
		for token in $val; do
			[[ $token == *"$ext_var"* ]] || continue
			file=$(resolve "$token")
			paths=$((paths + 1))
			[ -e "$file" ] || error "$dc: $opt names $token, which does not exist"
		done
	done < <(grep -E '^BR2_[A-Za-z0-9_]+="' "$defconfig")
	for opt in BR2_ROOTFS_POST_BUILD_SCRIPT BR2_ROOTFS_POST_IMAGE_SCRIPT BR2_ROOTFS_POST_FAKEROOT_SCRIPT; do
		for token in $(value "$opt"); do
			file=$(resolve "$token")
			[ -f "$file" ] || continue
			[ -x "$file" ] || error "$dc: $opt $token is not executable"
			head -n 1 "$file" | grep -q '^#!' || error "$dc: $opt $token has no #! line"
		done
	done
	# Paths into Buildroot's own tree cannot be checked without Buildroot.
	for opt in BR2_ROOTFS_OVERLAY BR2_ROOTFS_POST_BUILD_SCRIPT BR2_ROOTFS_POST_IMAGE_SCRIPT \
		BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE; do
		for token in $(value "$opt"); do
			[[ $token == *"$ext_var"* ]] || error "$dc: $opt $token is not inside this tree (use \$($ext_var))"
		done
	done
	ok "$dc: $paths path(s) into the tree, all present"

	# The one shared overlay.
	overlays=$(value BR2_ROOTFS_OVERLAY)
	if [ "$overlays" != "\$($ext_var)/$overlay_rel" ]; then
		error "$dc: BR2_ROOTFS_OVERLAY is '$overlays'; it must be exactly \$($ext_var)/$overlay_rel, the overlay image/ uses"
	else
		overlay_seen=1
	fi
	grep -q "^BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES=\"\$($ext_var)/$board_rel/linux.fragment\"\$" "$defconfig" ||
		error "$dc: BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES must be \$($ext_var)/$board_rel/linux.fragment"
	for opt in BR2_PACKAGE_ROUTERD BR2_LINUX_KERNEL BR2_LINUX_KERNEL_INSTALL_TARGET BR2_TARGET_ROOTFS_SQUASHFS \
		BR2_TARGET_ROOTFS_SQUASHFS4_XZ BR2_PACKAGE_HOST_GENIMAGE BR2_PACKAGE_HOST_E2FSPROGS BR2_PACKAGE_RAUC BR2_TARGET_GRUB2; do
		grep -q "^$opt=y\$" "$defconfig" || error "$dc: $opt=y is missing (the image layout needs it)"
	done
done

# ------------------------------------------------------------- the shared overlay
overlay=$tree/$overlay_rel
if [ -d "$overlay" ]; then
	ok "$overlay_rel exists ($(find "$overlay" -type f | wc -l) file(s))"
else
	pending "buildroot-overlay/$overlay_rel does not exist yet (the image build provides it)"
fi
uses=0
shopt -s nullglob
for script in "$repo"/image/*.sh "$repo"/image/*/*.sh; do
	while read -r token; do
		uses=$((uses + 1))
		case $token in
		*"buildroot-overlay/$overlay_rel" | *"buildroot-overlay/$overlay_rel/") ;;
		*) error "$(rel "$script") uses the overlay '$token'; the Buildroot defconfigs use buildroot-overlay/$overlay_rel" ;;
		esac
	done < <(grep -oE '[A-Za-z0-9_./${}-]*buildroot-overlay/[A-Za-z0-9_./-]*rootfs-overlay/?' "$script" | sort -u)
done
shopt -u nullglob
if [ "$uses" -gt 0 ]; then
	[ "$overlay_seen" = 1 ] && ok "image/ and the defconfigs use the same overlay: buildroot-overlay/$overlay_rel"
else
	pending "no image/*.sh uses buildroot-overlay/$overlay_rel yet: cannot show the two builds share it"
fi

# ---------------------------------------------------------------- linux.fragment
declare -A frag_value=()
if [ ! -f "$fragment" ]; then
	error "$(rel "$fragment") is missing"
else
	lineno=0
	while IFS= read -r line; do
		lineno=$((lineno + 1))
		if [[ $line =~ ^#\ CONFIG_([A-Z0-9_]+)\ is\ not\ set$ ]]; then
			sym=${BASH_REMATCH[1]}
			val=n
		elif [[ -z $line || $line =~ ^# ]]; then
			continue
		elif [[ $line =~ ^CONFIG_([A-Z0-9_]+)=(y|m|n|\"[^\"]*\"|-?[0-9]+|0x[0-9a-fA-F]+)$ ]]; then
			sym=${BASH_REMATCH[1]}
			val=${BASH_REMATCH[2]}
		else
			error "$(rel "$fragment"):$lineno: not a Kconfig line (CONFIG_NAME=y|m|n|\"text\"|number, or '# CONFIG_NAME is not set'): $line"
			continue
		fi
		if [ -n "${frag_value[$sym]:-}" ]; then
			error "$(rel "$fragment"):$lineno: CONFIG_$sym is set twice"
		fi
		frag_value[$sym]=$val
	done <"$fragment"
	ok "linux.fragment: ${#frag_value[@]} option(s), valid syntax"
fi
enabled() { [[ ${frag_value[$1]:-} == y || ${frag_value[$1]:-} == m ]]; }

# --------------------------------------------------------- modules-kconfig.txt
declare -A mod_symbol=() mod_kind=()
if [ ! -f "$table" ]; then
	error "$(rel "$table") is missing"
else
	lineno=0
	while read -r module symbol kind other rest; do
		lineno=$((lineno + 1))
		[[ -z $module || $module == \#* ]] && continue
		where="$(rel "$table"):$lineno"
		module=${module//-/_}
		if ! [[ $module =~ ^[a-z0-9_]+$ && $symbol =~ ^[A-Z0-9_]+$ ]]; then
			error "$where: expected 'MODULE SYMBOL [via OTHER | unused WHY | forbidden WHY]', found '$module $symbol'"
			continue
		fi
		[ -n "${mod_symbol[$module]:-}" ] && error "$where: module $module is listed twice"
		mod_symbol[$module]=$symbol
		case $kind in
		"")
			mod_kind[$module]='set'
			enabled "$symbol" || error "$where: module $module needs CONFIG_$symbol=y in linux.fragment"
			;;
		via)
			mod_kind[$module]=via
			if ! [[ $other =~ ^[A-Z0-9_]+$ ]]; then
				error "$where: 'via' needs the option that enables $symbol"
			elif ! enabled "$other"; then
				error "$where: module $module comes with CONFIG_$other, which linux.fragment does not set"
			fi
			[ "${frag_value[$symbol]:-}" = n ] && error "$where: linux.fragment turns off CONFIG_$symbol, needed for $module"
			;;
		unused | forbidden)
			mod_kind[$module]=$kind
			[ -n "$other" ] || error "$where: '$kind' needs a reason"
			if [ "$kind" = forbidden ] && enabled "$symbol"; then
				error "$where: CONFIG_$symbol must not be set in linux.fragment ($other $rest)"
			fi
			;;
		*) error "$where: unknown kind '$kind' (via, unused or forbidden)" ;;
		esac
	done <"$table"
	ok "modules-kconfig.txt: ${#mod_symbol[@]} module(s) mapped to options of linux.fragment"
fi
# Spec F2: the SIP helper must be off explicitly, whatever the base config has.
[ "${frag_value[NF_CONNTRACK_SIP]:-}" = n ] ||
	error "linux.fragment must say '# CONFIG_NF_CONNTRACK_SIP is not set' (spec F2: no SIP ALG)"

# Read a module list: one per line, or lsmod / /proc/modules output.
read_modules() {
	awk '$1 !~ /^#/ && NF > 0 && $1 != "Module" { print $1 }' "$1" |
		sed -e 's|.*/||' -e 's/\.ko\(\.[a-z]*\)\{0,1\}$//' -e 's/-/_/g'
}
check_modules() {
	local file=$1 n=0 module kind
	while read -r module; do
		n=$((n + 1))
		kind=${mod_kind[$module]:-}
		case $kind in
		"") error "$(rel "$file"): module $module is not in modules-kconfig.txt: add the Kconfig option that builds it (and set it in linux.fragment)" ;;
		forbidden) error "$(rel "$file"): module $module must not be shipped: CONFIG_${mod_symbol[$module]} is forbidden" ;;
		unused) note "$(rel "$file"): $module is not needed by the Buildroot kernel (see modules-kconfig.txt)" ;;
		esac
	done < <(read_modules "$file" | sort -u)
	ok "$(rel "$file"): $n module(s) checked against linux.fragment"
}
if [ -f "$image_modules" ]; then
	check_modules "$image_modules"
else
	pending "image/kernel-modules.txt does not exist yet: cannot show the fragment covers the modules the image loads"
fi
for file in "${extra_modules[@]}"; do
	if [ -f "$file" ]; then check_modules "$file"; else error "--modules $file: no such file"; fi
done

# ------------------------------------------------------------ --kernel-tree
if [ -n "$kernel_tree" ]; then
	config=$(compgen -G "$kernel_tree/boot/config-*" | head -n 1)
	moddir=$(compgen -G "$kernel_tree/usr/lib/modules/*" | head -n 1)
	[ -n "$moddir" ] || moddir=$(compgen -G "$kernel_tree/lib/modules/*" | head -n 1)
	if [ -z "$config" ] || [ -z "$moddir" ]; then
		error "--kernel-tree $kernel_tree: expected boot/config-* and usr/lib/modules/VERSION/ in it"
	else
		known=$(sed -n 's/^CONFIG_\([A-Z0-9_]*\)=.*/\1/p; s/^# CONFIG_\([A-Z0-9_]*\) is not set$/\1/p' "$config" | sort -u)
		mods=$({ find "$moddir" -name '*.ko*' -printf '%f\n' | sed 's/\.ko.*//'; sed 's|.*/||; s/\.ko$//' "$moddir/modules.builtin" 2>/dev/null; } | tr '-' '_' | sort -u)
		for sym in "${!frag_value[@]}"; do
			grep -qx "$sym" <<<"$known" || error "linux.fragment: CONFIG_$sym is not an option of $(basename "$config")"
		done
		for module in "${!mod_symbol[@]}"; do
			grep -qx "$module" <<<"$mods" || error "modules-kconfig.txt: $module is not a module of $(basename "$moddir")"
			grep -qx "${mod_symbol[$module]}" <<<"$known" ||
				error "modules-kconfig.txt: CONFIG_${mod_symbol[$module]} (for $module) is not an option of $(basename "$config")"
		done
		ok "linux.fragment and modules-kconfig.txt name only options and modules of $(basename "$moddir")"
	fi
fi

# ------------------------------------------- image layout: genimage, GRUB, RAUC
genimage=$board/genimage.cfg
grubcfg=$board/grub.cfg
postimage=$board/post-image.sh
declare -A part_index=() part_uuid=()
if [ ! -f "$genimage" ]; then
	error "$(rel "$genimage") is missing"
else
	# Partitions in table order: what GRUB calls gptN and Linux vdaN.
	index=0
	current=""
	while read -r line; do
		if [[ $line =~ ^partition[[:space:]]+([A-Za-z0-9_-]+)[[:space:]]*\{ ]]; then
			current=${BASH_REMATCH[1]}
			index=$((index + 1))
			part_index[$current]=$index
		elif [[ -n $current && $line =~ ^in-partition-table[[:space:]]*=[[:space:]]*\"?(false|no)\"? ]]; then
			unset "part_index[$current]"
			index=$((index - 1))
		elif [[ -n $current && $line =~ ^partition-uuid[[:space:]]*=[[:space:]]*\"([0-9a-fA-F-]+)\" ]]; then
			part_uuid[$current]=${BASH_REMATCH[1],,}
		elif [[ $line == "}" ]]; then
			current=""
		fi
	done < <(sed 's/^[[:space:]]*//' "$genimage")
	for p in boot rootfs-a rootfs-b data; do
		[ -n "${part_index[$p]:-}" ] || error "genimage.cfg: no partition '$p' in the partition table"
	done
	# Each partition image is made by genimage, by Buildroot or by post-image.sh.
	while read -r img; do
		if grep -q "^image ${img}[[:space:]]*{" "$genimage"; then continue; fi
		case $img in
		rootfs.*) grep -q "^BR2_TARGET_ROOTFS_$(echo "${img#rootfs.}" | tr '[:lower:]' '[:upper:]')=y" "${defconfigs[@]}" ||
			error "genimage.cfg: $img is not built by any defconfig" ;;
		*) grep -q "$img" "$postimage" || error "genimage.cfg: $img is made neither by genimage nor by post-image.sh" ;;
		esac
	done < <(sed -n 's/^[[:space:]]*image[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' "$genimage" | sort -u)
	# post-image.sh patches GRUB for the BIOS boot partition it expects.
	lba=$(sed -n 's/^BIOS_BOOT_LBA=\([0-9]*\)$/\1/p' "$postimage")
	offset=$(awk '/^[[:space:]]*partition bios[[:space:]]*\{/ { p = 1 } p && /offset/ { gsub(/[^0-9MK]/, ""); print; exit }' "$genimage")
	case $offset in
	*M) bytes=$((${offset%M} * 1048576)) ;;
	*K) bytes=$((${offset%K} * 1024)) ;;
	*) bytes=${offset:-0} ;;
	esac
	if [ -z "$lba" ] || [ "$((bytes / 512))" != "$lba" ]; then
		error "post-image.sh patches GRUB for the BIOS boot partition at sector ${lba:-?}, genimage.cfg puts it at ${offset:-?} (sector $((bytes / 512)))"
	fi
fi
if [ -f "$grubcfg" ] && [ -f "$genimage" ]; then
	for slot in a b; do
		p=rootfs-$slot
		slot_up=${slot^^}
		entry=$(awk -v id="$slot_up" '$1 == "menuentry" && $0 ~ "--id " id " " { p = 1 } p && /linux / { print; exit }' "$grubcfg")
		if [ -z "$entry" ]; then
			error "grub.cfg: no menuentry --id $slot_up with a linux line"
			continue
		fi
		[[ $entry =~ \(hd0,gpt([0-9]+)\) ]] && n=${BASH_REMATCH[1]} || n=""
		[ "$n" = "${part_index[$p]:-}" ] ||
			error "grub.cfg: slot $slot_up loads its kernel from (hd0,gpt${n:-?}) but $p is partition ${part_index[$p]:-?} in genimage.cfg"
		[[ $entry =~ root=PARTUUID=([0-9a-fA-F-]+) ]] && u=${BASH_REMATCH[1],,} || u=""
		if [ -z "$u" ] || [ "$u" != "${part_uuid[$p]:-}" ]; then
			error "grub.cfg: slot $slot_up boots root=PARTUUID=${u:-?} but $p has partition-uuid ${part_uuid[$p]:-?} in genimage.cfg"
		fi
		[[ $entry == *"rauc.slot=$slot_up"* ]] || error "grub.cfg: slot $slot_up does not pass rauc.slot=$slot_up to the kernel"
	done
	for defconfig in "${defconfigs[@]}"; do
		bp=$(sed -n 's/^BR2_TARGET_GRUB2_BOOT_PARTITION="\(.*\)"$/\1/p' "$defconfig")
		[ -z "$bp" ] && continue
		[ "$bp" = "hd0,gpt${part_index[boot]:-?}" ] ||
			error "$(rel "$defconfig"): BR2_TARGET_GRUB2_BOOT_PARTITION is $bp but the boot partition is gpt${part_index[boot]:-?} in genimage.cfg"
	done
	ok "genimage.cfg, grub.cfg, post-image.sh and the defconfigs agree on the partitions"
fi
# Where GRUB keeps grubenv inside the boot partition (the embedded config's
# prefix), and where the running system finds it, must be the same file.
grub_dir_in_part=""
for defconfig in "${defconfigs[@]}"; do
	early=$(sed -n 's/^BR2_TARGET_GRUB2_BUILTIN_CONFIG_PC="\(.*\)"$/\1/p' "$defconfig")
	[ -n "$early" ] || continue
	early=$(resolve "$early")
	[ -f "$early" ] || continue
	prefix=$(sed -n 's/^[[:space:]]*set prefix=//p' "$early" | tail -n 1)
	if [[ $prefix =~ ^\(hd0,gpt([0-9]+)\)(.*)$ ]]; then
		[ "${BASH_REMATCH[1]}" = "${part_index[boot]:-}" ] ||
			error "$(rel "$early"): GRUB's prefix is on gpt${BASH_REMATCH[1]}, the boot partition is gpt${part_index[boot]:-?} in genimage.cfg"
		grub_dir_in_part=${BASH_REMATCH[2]%/}
	else
		error "$(rel "$early"): no 'set prefix=(hd0,gptN)...' line"
	fi
done
if [ -f "$postimage" ] && ! grep -qF "\"\$bootdir$grub_dir_in_part/grubenv\"" "$postimage"; then
	error "post-image.sh does not write grubenv to \$bootdir$grub_dir_in_part/grubenv, where GRUB's prefix points"
fi
grep -q 'load_env --file \$prefix/grubenv' "$grubcfg" 2>/dev/null ||
	error "grub.cfg: load_env must read \$prefix/grubenv, the file RAUC writes"
system_conf=$overlay/etc/rauc/system.conf
if [ -f "$system_conf" ]; then
	while read -r dev; do
		case $dev in
		/dev/disk/by-partlabel/*)
			[ -n "${part_index[${dev##*/}]:-}" ] || error "$overlay_rel/etc/rauc/system.conf: $dev is not a partition of genimage.cfg" ;;
		/dev/disk/by-partuuid/*)
			found=0
			for p in "${!part_uuid[@]}"; do [ "${part_uuid[$p]}" = "${dev##*/}" ] && found=1; done
			[ "$found" = 1 ] || error "$overlay_rel/etc/rauc/system.conf: $dev is not a partition-uuid of genimage.cfg" ;;
		*) note "$overlay_rel/etc/rauc/system.conf: $dev names a device by kernel name; the Buildroot image cannot vouch for it" ;;
		esac
	done < <(sed -n 's/^[[:space:]]*device[[:space:]]*=[[:space:]]*//p' "$system_conf")
	for b in A B; do
		grep -qE "^[[:space:]]*bootname[[:space:]]*=[[:space:]]*${b}[[:space:]]*$" "$system_conf" ||
			error "$overlay_rel/etc/rauc/system.conf: no slot with bootname=$b (grub.cfg boots slots A and B)"
	done
	ok "RAUC's system.conf names partitions of genimage.cfg"
	# The overlay's rcS mounts the boot partition somewhere; RAUC's grubenv
	# must be the file GRUB reads there.
	rcs=$overlay/etc/init.d/rcS
	grubenv=$(sed -n 's/^[[:space:]]*grubenv[[:space:]]*=[[:space:]]*//p' "$system_conf")
	boot_mnt=$(grep -oE 'by-partlabel/boot"?[[:space:]]+/[A-Za-z0-9_/-]+' "$rcs" 2>/dev/null | awk '{ print $2 }' | head -n 1)
	if [ -n "$grubenv" ] && [ -n "$boot_mnt" ]; then
		[ "$grubenv" = "$boot_mnt$grub_dir_in_part/grubenv" ] ||
			error "system.conf's grubenv=$grubenv, but rcS mounts the boot partition on $boot_mnt and GRUB keeps grubenv at ${grub_dir_in_part:-/}grubenv in it"
	fi
fi

# ------------------------------------------------- what the overlay relies on
if [ -d "$overlay" ]; then
	for defconfig in "${defconfigs[@]}"; do
		dc=$(rel "$defconfig")
		if [ -f "$overlay/etc/inittab" ] && ! grep -qE '^BR2_INIT_(BUSYBOX|SYSV)=y$' "$defconfig"; then
			error "$dc: the overlay starts services from /etc/inittab, so BR2_INIT_BUSYBOX=y is needed"
		fi
		if compgen -G "$overlay/etc/systemd/system/*.service" >/dev/null && ! grep -q '^BR2_INIT_SYSTEMD=y$' "$defconfig"; then
			error "$dc: the overlay has systemd units, so BR2_INIT_SYSTEMD=y is needed"
		fi
		# Programs the overlay's scripts run that busybox does not provide.
		while read -r pattern option what; do
			if grep -rqE -- "$pattern" "$overlay" 2>/dev/null && ! grep -q "^$option=y\$" "$defconfig" &&
				! grep -rq "select $option\$" "$tree/package"; then
				error "$dc: the overlay uses $what, so $option=y is needed"
			fi
		done <<'NEEDS'
(/bin/bash|env bash) BR2_PACKAGE_BASH bash
blkid[[:space:]]+-[os] BR2_PACKAGE_UTIL_LINUX_BINARIES util-linux's blkid
(mkfs\.ext4|e2fsck) BR2_PACKAGE_E2FSPROGS e2fsprogs
(^|[^a-z-])rauc[[:space:]] BR2_PACKAGE_RAUC rauc
(^|[^a-z-])nft[[:space:]] BR2_PACKAGE_NFTABLES nft
(^|[^a-z-])dnsmasq[[:space:]] BR2_PACKAGE_DNSMASQ dnsmasq
NEEDS
	done
	ok "the defconfigs provide the init system and programs the overlay uses"
fi

# ---------------------------------------------------------------- routerd recipe
mk=$tree/package/routerd/routerd.mk
if [ -f "$mk" ]; then
	site=$(sed -n 's/^ROUTERD_SITE[[:space:]]*=[[:space:]]*//p' "$mk")
	site_dir=$(resolve "$site")
	[ "$(sed -n 's/^ROUTERD_SITE_METHOD[[:space:]]*=[[:space:]]*//p' "$mk")" = local ] ||
		error "routerd.mk: ROUTERD_SITE_METHOD must be local (the workspace is built in place)"
	if [ ! -f "$site_dir/Cargo.toml" ] || [ "$(cd "$site_dir" && pwd)" != "$repo" ]; then
		error "routerd.mk: ROUTERD_SITE ($site) is not the Cargo workspace at $(basename "$repo")/"
	else
		version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
		[ -n "$version" ] || error "Cargo.toml has no 'version = \"...\"' line: routerd.mk and post-image.sh read the version from it"
		# The recipe copies only the paths it includes: every member must be there.
		members=$(sed -n '/^members[[:space:]]*=/,/\]/p' "$repo/Cargo.toml" | grep -oE '"[^"]+"' | tr -d '"')
		for m in $members; do
			grep -qE -- "--include=/${m%%/*}/\*\*\*" "$mk" ||
				error "routerd.mk: workspace member $m is outside the paths ROUTERD_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS copies"
		done
		for bin in routerd routerctl; do
			grep -qE "^name = \"$bin\"" "$repo/daemon/$bin/Cargo.toml" 2>/dev/null ||
				error "routerd.mk installs $bin, but daemon/$bin/Cargo.toml is not the package $bin"
		done
		ok "routerd.mk builds workspace version ${version:-?} ($(echo "$members" | wc -w) member(s))"
	fi
	# Whatever starts routerd in the overlay must start the installed binary.
	for bin in routerd routerctl; do
		installed=$(grep -oE "\\\$\(TARGET_DIR\)/[^ ]*/$bin\b" "$mk" | head -n 1 | sed 's/^\$(TARGET_DIR)//')
		[ -n "$installed" ] || { error "routerd.mk does not install $bin into \$(TARGET_DIR)"; continue; }
		if [ -d "$overlay" ]; then
			while IFS=: read -r file _ text; do
				while read -r path; do
					[ "$path" = "$installed" ] ||
						error "$(rel "$file") runs $path, but routerd.mk installs $bin as $installed"
				done < <(grep -oE "(/usr)?/s?bin/$bin\b" <<<"$text")
			done < <(grep -rnE "(/usr)?/s?bin/$bin\b" "$overlay" 2>/dev/null)
		fi
	done
fi

# ------------------------------------------------------------------ shellcheck
if command -v shellcheck >/dev/null; then
	scripts=("$tree/check.sh")
	while read -r s; do scripts+=("$s"); done < <(find "$tree/board" "$tree/package" -name '*.sh' -not -path "$overlay/*")
	if out=$(shellcheck -x "${scripts[@]}" 2>&1); then
		ok "shellcheck: ${#scripts[@]} script(s) clean"
	else
		error "shellcheck finds problems:"
		while IFS= read -r l; do echo "  $l"; done <<<"$out"
	fi
else
	note "shellcheck is not installed: scripts not linted"
fi

if [ "$errors" -gt 0 ]; then
	echo "buildroot-overlay check: $errors problem(s)"
	exit 1
fi
echo "buildroot-overlay check: consistent"
