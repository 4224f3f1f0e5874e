//! Fixtures shared by the plan's unit tests.

use router_config::{Checked, Config};

/// The documented example config, parsed.
pub fn example() -> Config {
    let text = include_str!("../../../docs/examples/router.toml");
    let (cfg, diags) = router_config::parse_config(text);
    assert!(diags.is_empty(), "{diags:?}");
    cfg.expect("example parses")
}

/// `cfg` checked against the factory provider policy.
pub fn checked(cfg: Config) -> Checked {
    let policy = router_config::parse_policy(router_config::FACTORY_POLICY).expect("policy");
    router_config::check(cfg, policy).expect("config checks")
}
