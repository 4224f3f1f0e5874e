//! The apply room: makes a plan real and reads it back. The only code that
//! touches the kernel (nftables, /proc/sys, /sys) and other processes (nft).
//! Every operation is idempotent and reads the current state first.

pub mod apply;
pub mod facts;
pub mod netns;
pub mod nft;
pub mod sysctl;

#[cfg(test)]
mod testutil;
