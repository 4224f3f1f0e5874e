################################################################################
#
# ipnordic router firmware: package recipes and build tweaks
#
################################################################################

include $(sort $(wildcard $(BR2_EXTERNAL_IPNORDIC_PATH)/package/*/*.mk))

# routerd has dnsmasq add the addresses it resolves for the phones' vendor
# provisioning domains to an nft set (dnsmasq's nftset= option, spec O2).
# Buildroot builds dnsmasq without nftset support, so turn it on here and make
# dnsmasq wait for libnftables. external.mk is read after every package .mk,
# when dnsmasq's dependency list is already fixed, hence the explicit
# order-only prerequisite on its configure step.
ifeq ($(BR2_PACKAGE_ROUTERD)$(BR2_PACKAGE_DNSMASQ),yy)
DNSMASQ_COPTS += -DHAVE_NFTSET
$(DNSMASQ_TARGET_CONFIGURE): | nftables
endif
