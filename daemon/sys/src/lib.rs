//! The apply room: makes a plan real and reads it back. The only code that
//! touches the kernel (nftables, netlink, /proc/sys, /sys) and other
//! processes (nft, dnsmasq, chronyd, the WAN DHCP client). Every operation is
//! idempotent and reads the current state first.

pub mod apply;
pub mod chrony;
pub mod conntrack;
pub mod control;
pub mod dhcpc;
pub mod dnsmasq;
pub mod events;
pub mod facts;
pub mod lease;
pub mod links;
pub mod netns;
pub mod nft;
pub mod supervise;
pub mod sysctl;
pub mod tc;

#[cfg(test)]
mod testutil;
