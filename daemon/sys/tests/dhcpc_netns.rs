//! The WAN DHCP client (busybox udhcpc, with the command line
//! `dhcpc::argv` builds) under the supervisor, against a real DHCP server
//! (dnsmasq) in an "ISP" network namespace; both namespaces are made for the
//! test (`ip netns add`; needs root, which ./test.sh and CI have). Its event
//! script records each event's argument and environment, and
//! `dhcpc::parse_event` must turn them into the lease the server handed
//! out: the address asked for with `-r`, the gateway, the DNS servers, the
//! lease time. SIGUSR1 must produce a renew; a stopped client must not
//! release its lease. With `ROUTERD_TRIXIE_ROOT` set (./test.sh does) both
//! programs are the ones the router ships, chrooted; otherwise the host's
//! dnsmasq, and the host's busybox if it has one.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use router_sys::dhcpc::{argv, parse_event};
use router_sys::dnsmasq::{Dnsmasq, DnsmasqOpts};
use router_sys::lease::{DhcpEvent, WanLease};
use router_sys::supervise::{SuperviseOpts, Supervisor};

use common::{recorded, run, until, Dir, Netns, Userland};

const ISP: &str = "198.51.100.1";
const POOL_START: &str = "198.51.100.50";
const POOL_END: &str = "198.51.100.250";
const DNS: [&str; 2] = ["198.51.100.53", "198.51.100.54"];

/// The ISP's DHCP server: its address, a pool, a router and two DNS servers.
fn isp_conf(dir: &str) -> String {
    format!(
        "port=0\n\
         interface=isp0\n\
         bind-interfaces\n\
         dhcp-authoritative\n\
         no-ping\n\
         dhcp-range={POOL_START},{POOL_END},255.255.255.0,120s\n\
         dhcp-option=option:router,{ISP}\n\
         dhcp-option=option:dns-server,{},{}\n\
         dhcp-leasefile={dir}/isp.leases\n",
        DNS[0], DNS[1]
    )
}

#[tokio::test]
async fn udhcpc_gets_the_isp_lease_renews_on_sigusr1_and_keeps_it_on_stop() {
    let Some(userland) = Userland::find("udhcpc") else {
        return;
    };
    let id = std::process::id();
    let isp = Netns::new(format!("rd-dhcpc-isp-{id}"));
    let router = Netns::new(format!("rd-dhcpc-rt-{id}"));
    run(&[
        "ip", "-n", &isp.0, "link", "add", "isp0", "type", "veth", "peer", "name", "eth0", "netns",
        &router.0,
    ]);
    run(&[
        "ip",
        "-n",
        &isp.0,
        "addr",
        "add",
        &format!("{ISP}/24"),
        "dev",
        "isp0",
    ]);
    run(&["ip", "-n", &isp.0, "link", "set", "isp0", "up"]);
    run(&["ip", "-n", &router.0, "link", "set", "eth0", "up"]);
    let dir = Dir::new(&userland, "dhcpc");

    let server = Dnsmasq::start(
        DnsmasqOpts {
            command: userland.command(&isp, &["dnsmasq"]),
            root: userland.root.clone(),
            conf_path: format!("{}/isp.conf", dir.path),
            pidfile: format!("{}/isp.pid", dir.path),
        },
        &isp_conf(&dir.path),
    )
    .unwrap();
    until(5, "the ISP's server", || server.status().running).await;

    // The event script: records each event's argument and environment.
    let script = format!("{}/record.sh", dir.path);
    std::fs::write(
        dir.host.join("record.sh"),
        format!(
            "#!/bin/sh\n{{ echo \"event=$1\"; env; echo --end--; }} >> {}/events\n",
            dir.path
        ),
    )
    .unwrap();
    run(&["chmod", "755", dir.host.join("record.sh").to_str().unwrap()]);
    let events_file = dir.host.join("events");
    let events = || recorded(&events_file);
    let find = |event: &str| {
        events()
            .into_iter()
            .find(|(e, _)| e == event)
            .map(|(_, env)| env)
    };

    // As after a restart of routerd: ask for the address held before.
    let wanted: Ipv4Addr = "198.51.100.123".parse().unwrap();
    let pidfile = format!("{}/udhcpc.pid", dir.path);
    let client = Supervisor::spawn(
        "udhcpc",
        argv(
            &userland.command(&router, &["busybox", "udhcpc"]),
            "eth0",
            &script,
            &pidfile,
            Some(wanted),
        ),
        SuperviseOpts {
            pidfile: Some(userland.host_path(&pidfile)),
            pidfile_by_child: true,
            ..SuperviseOpts::default()
        },
    );

    until(10, "a bound event", || find("bound").is_some()).await;
    let recorded = events();
    assert_eq!(recorded[0].0, "deconfig", "the first event");
    assert_eq!(
        parse_event(&recorded[0].0, &recorded[0].1),
        Ok(DhcpEvent::Deconfig)
    );
    let bound = find("bound").unwrap();
    assert_eq!(bound.get("interface").map(String::as_str), Some("eth0"));
    let expected = WanLease {
        address: format!("{wanted}/24").parse().unwrap(),
        gateway: Some(ISP.parse().unwrap()),
        dns: DNS.iter().map(|a| a.parse().unwrap()).collect(),
        lease_secs: Some(120),
        server: Some(ISP.parse().unwrap()),
    };
    assert_eq!(
        parse_event("bound", &bound),
        Ok(DhcpEvent::Bound(expected.clone()))
    );
    let status = client.status();
    assert!(status.running);
    assert_eq!(status.restarts, 0, "the client exited: {status:?}");
    let pid = status.pid.unwrap();
    assert_eq!(
        std::fs::read_to_string(userland.host_path(&pidfile))
            .unwrap()
            .trim(),
        pid.to_string(),
        "udhcpc's pid file"
    );

    // routerd applies the lease itself; then a renew goes to the server.
    run(&[
        "ip",
        "-n",
        &router.0,
        "addr",
        "add",
        &expected.address.to_string(),
        "dev",
        "eth0",
    ]);
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGUSR1).unwrap();
    until(8, "a renew event", || find("renew").is_some()).await;
    assert_eq!(
        parse_event("renew", &find("renew").unwrap()),
        Ok(DhcpEvent::Renew(expected.clone()))
    );

    // Stopped (as at shutdown or a restart of routerd), the client does not
    // release the lease: the server still holds it for this client.
    client.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leases = std::fs::read_to_string(dir.host.join("isp.leases")).unwrap();
    assert!(
        leases.contains(&format!(" {wanted} ")),
        "the lease was released: {leases:?}"
    );
    let names: Vec<String> = events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        names.iter().filter(|e| *e == "deconfig").count(),
        1,
        "the client dropped its lease on stop: {names:?}"
    );
    server.stop().await;
}
