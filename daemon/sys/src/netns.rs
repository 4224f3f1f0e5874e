//! For kernel tests: run a test body inside a throwaway user and network
//! namespace by re-executing the test binary under `unshare -rn`. The body
//! sees a private network stack (its own nftables, its own /proc/sys/net,
//! its own links) and needs no root; the host's networking is never touched.

use std::process::Command;

const IN_NETNS: &str = "ROUTERD_IN_NETNS";
const MARKER: &str = "ROUTERD-NETNS-BODY-PASSED";
const HOST_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Runs `body` in a private network namespace: directly when this process is
/// the copy inside, otherwise by re-executing the test binary filtered to
/// `test` under `unshare -rn`, then checking the copy ran the body and that
/// the host's own forwarding setting did not change. Panics (fails the test)
/// with the child's output on any failure.
pub fn in_netns(test: &str, body: fn()) {
    if std::env::var_os(IN_NETNS).is_some() {
        body();
        println!("{MARKER} {test}");
        return;
    }
    let read_forward = || {
        std::fs::read_to_string(HOST_FORWARD)
            .unwrap_or_else(|e| panic!("cannot read {HOST_FORWARD}: {e}"))
    };
    let host_forward = read_forward();
    let exe =
        std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test binary: {e}"));
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `unshare` (util-linux) for {test}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{test} failed in `unshare -rn` ({}). If unshare itself failed, unprivileged \
         user namespaces are not permitted here (user.max_user_namespaces, \
         kernel.unprivileged_userns_clone, AppArmor restrict_unprivileged_userns) \
         and this test cannot prove apply against the kernel.\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("{MARKER} {test}")),
        "{test}: the child exited 0 without running the body\n--- stdout\n{stdout}"
    );
    assert_eq!(
        read_forward(),
        host_forward,
        "the host's own ip_forward changed"
    );
}
