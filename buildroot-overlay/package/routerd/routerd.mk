################################################################################
#
# routerd
#
################################################################################

# Built from the Cargo workspace this external tree lives in: the workspace
# root is the parent of buildroot-overlay/. The version is the workspace's.
ROUTERD_VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' \
	$(BR2_EXTERNAL_IPNORDIC_PATH)/../Cargo.toml | head -n 1)
ROUTERD_SITE = $(BR2_EXTERNAL_IPNORDIC_PATH)/..
ROUTERD_SITE_METHOD = local
ROUTERD_LICENSE = MIT or Apache-2.0

# Copy only what the workspace build reads. A whitelist, so that a Buildroot
# output directory, the host's target/ or a disk image inside the checkout is
# never copied into the build (or into itself).
# rsync applies the first rule that matches, so build outputs go first.
ROUTERD_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/daemon/*/target \
	--include=/Cargo.toml --include=/Cargo.lock \
	--include=/.cargo/*** --include=/daemon/*** \
	--exclude=/*

# A local site has no download step, so Buildroot's cargo vendoring (a
# download post-process) never runs for it, and the build is --offline.
# Fetch the locked crates into Buildroot's cargo home in the download
# directory first: after one online build, DL_DIR holds everything and
# later builds work without network.
define ROUTERD_FETCH_CRATES
	mkdir -p $(BR_CARGO_HOME)
	cd $(@D) && $(PKG_COMMON_CARGO_ENV) \
		flock $(BR_CARGO_HOME)/.br-lock \
		$(HOST_DIR)/bin/cargo fetch --locked --manifest-path Cargo.toml
endef
ROUTERD_PRE_BUILD_HOOKS += ROUTERD_FETCH_CRATES

ROUTERD_CARGO_BUILD_OPTS = --package routerd --package routerctl

# The workspace root is a virtual manifest, which `cargo install --path .`
# (the infrastructure's default install) refuses; install the two binaries.
ROUTERD_BIN_DIR = $(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)

define ROUTERD_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(ROUTERD_BIN_DIR)/routerd $(TARGET_DIR)/usr/bin/routerd
	$(INSTALL) -D -m 0755 $(ROUTERD_BIN_DIR)/routerctl $(TARGET_DIR)/usr/bin/routerctl
endef

$(eval $(cargo-package))
