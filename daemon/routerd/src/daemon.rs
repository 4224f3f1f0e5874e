//! The long-running routerd: applies the plan, then keeps the kernel there.
//!
//! One task owns all state and handles, one at a time: control requests
//! (`routerctl status | apply | reload`, the WAN DHCP client's events),
//! SIGHUP (reload), rtnetlink events (links, addresses, routes) and a
//! periodic check. Every change goes config -> plan -> apply -> verify; a
//! config that does not check is refused and the running state is left
//! exactly as it was.
//!
//! On start routerd adopts what the kernel already holds: the links apply
//! only adds what is missing, a ruleset that carries the plan's fingerprint
//! is not reloaded, settings are written only where they differ, and the
//! WAN DHCP client asks for the address the WAN already has. So a restart
//! (or a crash) does not drop a call.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use router_config::model::WanMode;
use router_config::{Checked, Diagnostic, HostFacts};
use router_plan::Plan;
use router_sys::chrony::{Chrony, ChronyOpts};
use router_sys::control::{self, ChildState, Request, Response, Status, WanStatus};
use router_sys::dnsmasq::{Dnsmasq, DnsmasqOpts};
use router_sys::events::NetEvent;
use router_sys::lease::{DhcpEvent, WanLease};
use router_sys::links::Netlink;
use router_sys::nft::Nft;
use router_sys::supervise::{SuperviseOpts, Supervisor};
use router_sys::sysctl::Sysctls;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::load::{self, chain, Inputs};

/// How often routerd checks that the kernel still holds the plan.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// Network events are gathered this long before routerd reacts once.
const SETTLE: Duration = Duration::from_millis(250);
/// The longest a control client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How routerd runs the programs it needs.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `nft`.
    pub nft: Vec<String>,
    /// dnsmasq.
    pub dnsmasq: Vec<String>,
    /// chronyd.
    pub chronyd: Vec<String>,
    /// The WAN DHCP client (busybox udhcpc).
    pub dhcp_client: Vec<String>,
    /// routerctl, which the DHCP client's event script runs.
    pub routerctl: String,
    /// Where kernel settings live (`/proc/sys`).
    pub sysctl_root: PathBuf,
}

/// A request from a control client, with where to send the answer.
struct Call {
    request: Request,
    reply: oneshot::Sender<Response>,
}

/// Everything routerd owns.
struct Router {
    inputs: Inputs,
    programs: Programs,
    checked: Checked,
    /// The config text in force (what the config file holds).
    config_text: String,
    /// The facts read at start (or reload); `wan_up` is routerd's own.
    facts: HostFacts,
    plan: Plan,
    plan_hash: String,
    netlink: Netlink,
    nft: Nft,
    sysctls: Sysctls,
    /// The WAN's DHCP lease (DHCP mode), once the client reported one.
    lease: Option<WanLease>,
    /// The running client reported a lease (its first `deconfig`, at its
    /// start, must not take away an address adopted from before).
    client_bound: bool,
    /// The WAN's address as last seen.
    wan_address: Option<Ipv4Net>,
    wan_carrier: bool,
    wan_last_change: Option<u64>,
    dnsmasq: Option<Dnsmasq>,
    /// The phones' time server, while the plan has one.
    chronyd: Option<Chrony>,
    dhcp_client: Option<Supervisor>,
    last_apply: Option<u64>,
    last_error: Option<String>,
    started: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first 16 hex digits of the SHA-256 of the whole plan's text.
fn plan_hash(plan: &Plan) -> String {
    Sha256::digest(plan.render_all().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs routerd until SIGTERM or SIGINT. Returns an error (and exits)
/// only when it cannot start: no valid config, no netlink, no socket.
pub async fn run(inputs: Inputs, programs: Programs) -> Result<(), String> {
    let policy = load::policy(&inputs)?;
    let text = load::read(&inputs.config, "config")?;
    let checked = load::check(&text, policy)
        .map_err(|d| load::refused(&format!("{}", inputs.config.display()), &d))?;
    let netlink = Netlink::open().map_err(|e| chain(&e))?;
    let facts = load::host_facts(&inputs, &netlink).await?;
    let mut events = router_sys::events::subscribe()
        .await
        .map_err(|e| chain(&e))?;
    let socket = control::socket_path(&inputs.run_dir);
    let listener = listen(&socket)?;
    let nft = Nft::new(programs.nft.clone());
    let sysctls = Sysctls::new(programs.sysctl_root.clone());
    let wan = checked.config.wan.interface.clone();
    let wan_address = first_address(&netlink, &wan).await;
    let wan_carrier = matches!(netlink.link_state(&wan).await, Ok(Some(s)) if s.carrier);
    let plan = plan_for(&checked, &facts, wan_address)
        .map_err(|d| load::refused(&format!("{} on this host", inputs.config.display()), &d))?;
    let mut router = Router {
        plan_hash: plan_hash(&plan),
        plan,
        inputs,
        programs,
        checked,
        config_text: text,
        facts,
        netlink,
        nft,
        sysctls,
        lease: None,
        client_bound: false,
        wan_address,
        wan_carrier,
        wan_last_change: None,
        dnsmasq: None,
        chronyd: None,
        dhcp_client: None,
        last_apply: None,
        last_error: None,
        started: now(),
    };
    match router.apply_plan().await {
        Ok(changes) => {
            info!(
                plan = %router.plan_hash,
                policy = %router.plan.policy,
                changes = changes.len(),
                "applied and verified"
            );
            for c in changes {
                info!(change = %c, "changed");
            }
        }
        Err(e) => {
            error!(error = %e, "the first apply failed; routerd keeps running and retries on the next check");
            router.last_error = Some(e);
        }
    }
    // The links are up and addressed now: an event from here on is a real change.
    let wan = router.wan_ifname();
    router.wan_carrier = matches!(router.netlink.link_state(&wan).await, Ok(Some(s)) if s.carrier);
    router.wan_address = first_address(&router.netlink, &wan).await;
    router.start_children().await;

    let (calls, mut incoming) = mpsc::channel::<Call>(16);
    tokio::spawn(accept(listener, calls));
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.tick().await;
    info!(socket = %socket.display(), "routerd is running");
    loop {
        tokio::select! {
            Some(call) = incoming.recv() => {
                let answer = router.handle(call.request).await;
                let _ = call.reply.send(answer);
            }
            Some(event) = events.recv() => {
                let mut batch = vec![event];
                let deadline = tokio::time::sleep(SETTLE);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        Some(e) = events.recv() => batch.push(e),
                        () = &mut deadline => break,
                    }
                }
                router.on_net_events(batch).await;
            }
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the config");
                let answer = router.reload().await;
                log_answer("reload", &answer);
            }
            _ = check.tick() => router.periodic_check().await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!("stopping; the network stays as it is");
    router.stop_children().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The first IPv4 address of `ifname` as the kernel has it (none if it
/// cannot be read).
async fn first_address(netlink: &Netlink, ifname: &str) -> Option<Ipv4Net> {
    netlink
        .ipv4_addresses(ifname)
        .await
        .ok()
        .and_then(|a| a.first().copied())
}

fn log_answer(what: &str, answer: &Response) {
    match answer {
        Response::Applied { plan_hash, .. } => info!(plan = %plan_hash, "{what}: applied"),
        Response::Refused { diagnostics } => {
            warn!(
                problems = diagnostics.len(),
                "{what}: config refused, nothing changed"
            );
            for d in diagnostics {
                warn!("{what}: {d}");
            }
        }
        Response::Failed { error } => error!(error = %error, "{what} failed"),
        _ => {}
    }
}

/// The WAN has an address phones may be NATed to: always when it is
/// static, in DHCP mode once it has one.
fn wan_up(checked: &Checked, wan_address: Option<Ipv4Net>) -> bool {
    match checked.config.wan.mode {
        WanMode::Static => true,
        WanMode::Dhcp => wan_address.is_some(),
    }
}

/// The plan for `checked` on this host, with the WAN as it is now.
fn plan_for(
    checked: &Checked,
    facts: &HostFacts,
    wan_address: Option<Ipv4Net>,
) -> Result<Plan, Vec<Diagnostic>> {
    let facts = HostFacts {
        wan_up: wan_up(checked, wan_address),
        ..facts.clone()
    };
    router_plan::compile(checked, &facts)
}

/// Opens the control socket (root only), replacing a stale one.
fn listen(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the run directory {}: {e}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "another routerd is already listening on {}",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    Ok(listener)
}

async fn accept(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, calls.clone()));
            }
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let got = tokio::time::timeout(CLIENT_TIMEOUT, BufReader::new(read).read_line(&mut line)).await;
    let answer = match got {
        Ok(Ok(_)) => match control::decode::<Request>(&line) {
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                if calls.send(Call { request, reply }).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(a) => a,
                    Err(_) => return,
                }
            }
            Err(why) => Response::Failed {
                error: format!("not a request routerd understands: {why}"),
            },
        },
        Ok(Err(e)) => Response::Failed {
            error: format!("reading the request: {e}"),
        },
        Err(_) => Response::Failed {
            error: "no request within 10 s".into(),
        },
    };
    let mut out = control::encode(&answer);
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
    let _ = write.shutdown().await;
}

impl Router {
    fn wan_ifname(&self) -> String {
        self.checked.config.wan.interface.clone()
    }

    fn dhcp_mode(&self) -> bool {
        self.checked.config.wan.mode == WanMode::Dhcp
    }

    /// The WAN has an address phones may be NATed to.
    fn wan_up(&self) -> bool {
        wan_up(&self.checked, self.wan_address)
    }

    /// The phone and Wi-Fi calling networks, whose flows a WAN change makes stale.
    fn phone_nets(&self) -> Vec<Ipv4Net> {
        let c = &self.checked.config;
        let mut nets = vec![c.phones.address.trunc()];
        if let Some(w) = &c.wifi_calling {
            nets.push(w.address.trunc());
        }
        nets
    }

    /// Makes the kernel hold `self.plan`: links, the WAN lease, settings
    /// and ruleset, then reads back. Returns what changed.
    async fn apply_plan(&mut self) -> Result<Vec<String>, String> {
        let mut changes: Vec<String> = Vec::new();
        let links = self
            .netlink
            .apply(&self.plan.links)
            .await
            .map_err(|e| chain(&e))?;
        changes.extend(links.iter().map(ToString::to_string));
        if let (true, Some(lease)) = (self.dhcp_mode(), self.lease.clone()) {
            let wan = self.wan_ifname();
            let c = self
                .netlink
                .set_wan_lease(&wan, Some(&lease))
                .await
                .map_err(|e| chain(&e))?;
            changes.extend(c.iter().map(ToString::to_string));
        }
        let report = router_sys::apply::apply(&self.plan, &self.nft, &self.sysctls)
            .map_err(|e| chain(&e))?;
        changes.extend(
            report
                .sysctl_changes
                .iter()
                .map(|c| format!("{} {} -> {}", c.path, c.old, c.new)),
        );
        if report.ruleset_loaded {
            changes.push(format!(
                "ruleset loaded (fingerprint {})",
                self.plan.nft.fingerprint()
            ));
        }
        let tc = router_sys::tc::apply(self.netlink.handle(), &self.plan.qos)
            .await
            .map_err(|e| chain(&e))?;
        changes.extend(tc.iter().map(ToString::to_string));
        let mut drift = self
            .netlink
            .verify(&self.plan.links)
            .await
            .map_err(|e| chain(&e))?;
        drift.extend(
            router_sys::tc::verify(self.netlink.handle(), &self.plan.qos)
                .await
                .map_err(|e| chain(&e))?,
        );
        if !drift.is_empty() {
            return Err(format!(
                "the kernel does not match the plan after apply: {}",
                drift.join("; ")
            ));
        }
        if let Some(d) = &self.dnsmasq {
            match d.update(&self.plan.dhcp.dnsmasq_conf).await {
                Ok(true) => changes.push("dnsmasq config rewritten, dnsmasq restarted".into()),
                Ok(false) => {}
                Err(e) => return Err(format!("writing the dnsmasq config: {e}")),
            }
        }
        if let (Some(c), Some(conf)) = (&self.chronyd, &self.plan.ntp.chrony_conf) {
            match c.update(conf).await {
                Ok(true) => changes.push("chrony config rewritten, chronyd restarted".into()),
                Ok(false) => {}
                Err(e) => return Err(format!("writing the chrony config: {e}")),
            }
        }
        self.last_apply = Some(now());
        self.last_error = None;
        Ok(changes)
    }

    /// Starts dnsmasq, chronyd (while the plan has a time service) and, in
    /// DHCP mode, the WAN DHCP client.
    async fn start_children(&mut self) {
        if self.dnsmasq.is_none() {
            let mut opts = DnsmasqOpts::new(&self.facts);
            opts.command = self.programs.dnsmasq.clone();
            match Dnsmasq::start(opts, &self.plan.dhcp.dnsmasq_conf) {
                Ok(d) => self.dnsmasq = Some(d),
                Err(e) => {
                    error!(error = %e, "cannot start dnsmasq");
                    self.last_error = Some(format!("cannot start dnsmasq: {e}"));
                }
            }
        }
        match (&self.chronyd, &self.plan.ntp.chrony_conf) {
            (None, Some(conf)) => {
                let mut opts = ChronyOpts::new(&self.facts);
                opts.command = self.programs.chronyd.clone();
                match Chrony::start(opts, conf) {
                    Ok(c) => self.chronyd = Some(c),
                    Err(e) => {
                        error!(error = %e, "cannot start chronyd");
                        self.last_error = Some(format!("cannot start chronyd: {e}"));
                    }
                }
            }
            (Some(_), None) => {
                if let Some(c) = self.chronyd.take() {
                    c.stop().await;
                }
            }
            _ => {}
        }
        self.write_wan_dns();
        if self.dhcp_mode() && self.dhcp_client.is_none() {
            self.start_dhcp_client();
        }
        if !self.dhcp_mode() {
            if let Some(c) = self.dhcp_client.take() {
                c.stop().await;
                self.lease = None;
                self.client_bound = false;
            }
        }
    }

    fn start_dhcp_client(&mut self) {
        let run = self.facts.run_dir.trim_end_matches('/').to_string();
        let script = format!("{run}/udhcpc.script");
        let socket = control::socket_path(&run);
        if let Err(e) = router_sys::dhcpc::write_script(
            Path::new(&script),
            &self.programs.routerctl,
            &socket.to_string_lossy(),
        ) {
            error!(error = %e, script = %script, "cannot write the DHCP client's event script");
            self.last_error = Some(format!("cannot write {script}: {e}"));
            return;
        }
        let wan = self.wan_ifname();
        let argv = router_sys::dhcpc::argv(
            &self.programs.dhcp_client,
            &wan,
            &script,
            &format!("{run}/udhcpc.pid"),
            self.wan_address.map(|a| a.addr()),
        );
        info!(interface = %wan, asks_for = ?self.wan_address, "starting the WAN DHCP client");
        self.client_bound = false;
        self.dhcp_client = Some(Supervisor::spawn(
            "udhcpc",
            argv,
            SuperviseOpts {
                pidfile: Some(PathBuf::from(format!("{run}/udhcpc.pid"))),
                pidfile_by_child: true,
                same_program: router_sys::dhcpc::same_client,
                ..SuperviseOpts::default()
            },
        ));
    }

    async fn stop_children(&mut self) {
        if let Some(c) = self.dhcp_client.take() {
            c.stop().await;
        }
        if let Some(c) = self.chronyd.take() {
            c.stop().await;
        }
        if let Some(d) = self.dnsmasq.take() {
            d.stop().await;
        }
    }

    /// The DNS servers the WAN lease gave, for dnsmasq (it rereads the file).
    fn write_wan_dns(&self) {
        let Some(client) = &self.plan.dhcp.wan_client else {
            return;
        };
        let servers: Vec<Ipv4Addr> = self
            .lease
            .as_ref()
            .map(|l| l.dns.clone())
            .unwrap_or_default();
        let text: String = servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        let path = Path::new(&client.resolv_file);
        if let Err(e) = router_sys::dnsmasq::write_conf(path, &text) {
            warn!(error = %e, file = %path.display(), "cannot write the WAN's DNS servers");
        }
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(Box::new(self.status().await)),
            Request::Apply { config } => {
                let answer = self.apply_text(&config, true).await;
                log_answer("routerctl apply", &answer);
                answer
            }
            Request::Reload => {
                let answer = self.reload().await;
                log_answer("reload", &answer);
                answer
            }
            Request::DhcpEvent { ifname, event } => self.on_dhcp_event(&ifname, event).await,
        }
    }

    async fn reload(&mut self) -> Response {
        match load::read(&self.inputs.config, "config") {
            Ok(text) => self.apply_text(&text, false).await,
            Err(e) => Response::Failed { error: e },
        }
    }

    /// Check, plan, apply a new config. Refused before anything is touched
    /// if it does not check or does not fit the host; if applying fails, the
    /// previous plan is put back.
    async fn apply_text(&mut self, text: &str, save: bool) -> Response {
        let policy = match load::policy(&self.inputs) {
            Ok(p) => p,
            Err(e) => return Response::Failed { error: e },
        };
        let checked = match load::check(text, policy) {
            Ok(c) => c,
            Err(diags) => {
                return Response::Refused {
                    diagnostics: diags.iter().map(ToString::to_string).collect(),
                }
            }
        };
        let facts = match load::facts(&self.inputs) {
            Ok(f) if self.inputs.facts.is_none() => HostFacts {
                fq_codel: self.facts.fq_codel,
                ..f
            },
            Ok(f) => f,
            Err(e) => return Response::Failed { error: e },
        };
        let wan_changed = checked.config.wan != self.checked.config.wan;
        let plan = match plan_for(&checked, &facts, self.wan_address) {
            Ok(p) => p,
            Err(diags) => {
                return Response::Refused {
                    diagnostics: diags.iter().map(ToString::to_string).collect(),
                }
            }
        };
        if save {
            if let Err(e) = router_sys::dnsmasq::write_conf(&self.inputs.config, text) {
                return Response::Failed {
                    error: format!(
                        "cannot save the config to {}: {e}; nothing changed",
                        self.inputs.config.display()
                    ),
                };
            }
        }
        let old = (
            std::mem::replace(&mut self.checked, checked),
            std::mem::replace(&mut self.plan, plan),
            std::mem::replace(&mut self.facts, facts),
        );
        match self.apply_plan().await {
            Ok(mut changes) => {
                self.plan_hash = plan_hash(&self.plan);
                self.config_text = text.to_string();
                if old.1.qos.wan != self.plan.qos.wan {
                    match router_sys::tc::remove(
                        self.netlink.handle(),
                        &old.1.qos.wan,
                        &old.1.qos.ifb,
                    )
                    .await
                    {
                        Ok(c) => changes.extend(c.iter().map(ToString::to_string)),
                        Err(e) => warn!(error = %chain(&e), "cannot remove the old WAN's shaper"),
                    }
                }
                if wan_changed {
                    changes.extend(self.wan_changed_by_config().await);
                }
                self.start_children().await;
                Response::Applied {
                    plan_hash: self.plan_hash.clone(),
                    warnings: self.plan.warnings.iter().map(ToString::to_string).collect(),
                    changes,
                }
            }
            Err(e) => {
                error!(error = %e, "apply failed; putting the previous plan back");
                self.checked = old.0;
                self.plan = old.1;
                self.facts = old.2;
                if save {
                    // The file must describe what runs.
                    if let Err(e) =
                        router_sys::dnsmasq::write_conf(&self.inputs.config, &self.config_text)
                    {
                        error!(error = %e, "cannot put the previous config file back");
                    }
                }
                let back = self.apply_plan().await;
                let error = match back {
                    Ok(_) => format!("{e}; the previous config is back in force"),
                    Err(e2) => format!("{e}; putting the previous config back also failed: {e2}"),
                };
                self.last_error = Some(error.clone());
                Response::Failed { error }
            }
        }
    }

    /// A config change touched the WAN: the DHCP client restarts on the
    /// (possibly new) interface, and flows tied to the old address go.
    async fn wan_changed_by_config(&mut self) -> Vec<String> {
        let mut changes = Vec::new();
        if let Some(c) = self.dhcp_client.take() {
            c.stop().await;
            changes.push("WAN DHCP client restarted".to_string());
        }
        let wan = self.wan_ifname();
        let now_addr = first_address(&self.netlink, &wan).await;
        if now_addr != self.wan_address {
            self.wan_address = now_addr;
            self.wan_last_change = Some(now());
            changes.extend(self.flush_stale_flows());
        }
        changes
    }

    fn flush_stale_flows(&mut self) -> Option<String> {
        let nets = self.phone_nets();
        let wan = self.wan_address.map(|a| a.addr());
        match router_sys::conntrack::flush_stale(&nets, wan) {
            Ok(n) => {
                info!(deleted = n, wan_address = ?wan, "stale flows deleted after a WAN change");
                Some(format!("{n} stale flows deleted"))
            }
            Err(e) => {
                let e = chain(&e);
                error!(error = %e, "cannot delete stale flows");
                self.last_error = Some(e);
                None
            }
        }
    }

    /// Re-plans for the current WAN state if it changed what phones may do.
    async fn replan_for_wan(&mut self) {
        let want = self.wan_up();
        match plan_for(&self.checked, &self.facts, self.wan_address) {
            Ok(plan) => {
                if plan.nft.fingerprint() == self.plan.nft.fingerprint() {
                    return;
                }
                self.plan = plan;
                self.plan_hash = plan_hash(&self.plan);
                match self.apply_plan().await {
                    Ok(_) => {
                        info!(wan_up = want, plan = %self.plan_hash, "ruleset follows the WAN state")
                    }
                    Err(e) => {
                        error!(error = %e, "cannot apply the ruleset for the WAN state");
                        self.last_error = Some(e);
                    }
                }
            }
            Err(d) => {
                let e = load::refused("planning for the WAN state", &d);
                error!(error = %e, "cannot plan for the WAN state");
                self.last_error = Some(e);
            }
        }
    }

    async fn on_dhcp_event(&mut self, ifname: &str, event: DhcpEvent) -> Response {
        let wan = self.wan_ifname();
        if ifname != wan || !self.dhcp_mode() {
            return Response::Failed {
                error: format!(
                    "a DHCP event for {ifname}, but the WAN is {wan} in {:?} mode",
                    self.checked.config.wan.mode
                ),
            };
        }
        info!(interface = %ifname, event = ?event, "WAN DHCP event");
        match event {
            DhcpEvent::Bound(lease) | DhcpEvent::Renew(lease) => {
                if let Err(e) = self.netlink.set_wan_lease(&wan, Some(&lease)).await {
                    let e = chain(&e);
                    error!(error = %e, "cannot apply the WAN lease");
                    self.last_error = Some(e.clone());
                    return Response::Failed { error: e };
                }
                self.client_bound = true;
                let changed = self.wan_address != Some(lease.address);
                self.lease = Some(lease.clone());
                self.write_wan_dns();
                if changed {
                    info!(old = ?self.wan_address, new = %lease.address, "WAN address changed");
                    let was_down = self.wan_address.is_none();
                    self.wan_address = Some(lease.address);
                    self.wan_last_change = Some(now());
                    self.flush_stale_flows();
                    if was_down {
                        self.wan_came_up().await;
                    }
                }
                self.replan_for_wan().await;
                Response::Done
            }
            DhcpEvent::Deconfig | DhcpEvent::Leasefail | DhcpEvent::Nak => {
                if !self.client_bound {
                    // The client's start, or no server yet: keep what the WAN has.
                    return Response::Done;
                }
                if matches!(event, DhcpEvent::Leasefail) && self.lease.is_none() {
                    return Response::Done;
                }
                warn!(interface = %wan, "WAN lease lost: phones wait until there is a new one");
                self.lease = None;
                if let Err(e) = self.netlink.set_wan_lease(&wan, None).await {
                    let e = chain(&e);
                    error!(error = %e, "cannot remove the lost lease");
                    self.last_error = Some(e);
                }
                if self.wan_address.take().is_some() {
                    self.wan_last_change = Some(now());
                }
                self.replan_for_wan().await;
                self.flush_stale_flows();
                Response::Done
            }
        }
    }

    /// Reacts to a batch of kernel events: puts back addresses and routes
    /// that went, notices WAN address and carrier changes.
    async fn on_net_events(&mut self, batch: Vec<NetEvent>) {
        let wan = self.wan_ifname();
        let mut carrier_back = false;
        for e in &batch {
            tracing::debug!(event = ?e, "network event");
            if let NetEvent::LinkChanged {
                ifname, carrier, ..
            } = e
            {
                if *ifname == wan {
                    if *carrier && !self.wan_carrier {
                        carrier_back = true;
                    }
                    if *carrier != self.wan_carrier {
                        info!(interface = %wan, carrier, "WAN link changed");
                    }
                    self.wan_carrier = *carrier;
                }
            }
        }
        self.reconcile().await;
        if carrier_back {
            // Another network may be behind the cable now: no old mapping
            // may survive, and the lease is checked at once.
            self.flush_stale_flows();
            if let Some(c) = &self.dhcp_client {
                if let Some(pid) = c.status().pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGUSR1,
                    );
                }
            }
        }
    }

    /// Puts back what the kernel lost (addresses, routes), and follows a WAN
    /// address that changed underneath.
    async fn reconcile(&mut self) {
        if let Err(e) = self.netlink.apply(&self.plan.links).await {
            let e = chain(&e);
            warn!(error = %e, "cannot restore links");
            self.last_error = Some(e);
        }
        let wan = self.wan_ifname();
        if let (true, Some(lease)) = (self.dhcp_mode(), self.lease.clone()) {
            if let Err(e) = self.netlink.set_wan_lease(&wan, Some(&lease)).await {
                warn!(error = %chain(&e), "cannot restore the WAN lease");
            }
        }
        if let Err(e) = self
            .netlink
            .ensure_routes(&self.plan.links, self.lease.as_ref())
            .await
        {
            warn!(error = %chain(&e), "cannot restore routes");
        }
        let now_addr = first_address(&self.netlink, &wan).await;
        if now_addr != self.wan_address {
            info!(old = ?self.wan_address, new = ?now_addr, "WAN address changed");
            let came_up = self.wan_address.is_none() && now_addr.is_some();
            self.wan_address = now_addr;
            self.wan_last_change = Some(now());
            self.flush_stale_flows();
            if came_up {
                self.wan_came_up().await;
            }
            self.replan_for_wan().await;
        }
    }

    /// The WAN has an address again. While it had none, chronyd kept
    /// retrying the provider's server, and its name, at growing intervals
    /// (up to an hour apart); started over, it asks at once, so the phones
    /// have time seconds after the WAN comes up.
    async fn wan_came_up(&self) {
        if let Some(c) = &self.chronyd {
            info!(
                child = "chronyd",
                "the WAN is up: restarting chronyd to ask the provider now"
            );
            c.restart().await;
        }
    }

    async fn periodic_check(&mut self) {
        self.reconcile().await;
        match self.nft.verify(&self.plan.nft) {
            Ok(Ok(())) => {}
            Ok(Err(drift)) => {
                error!(drift = %drift, "the ruleset drifted from the plan; applying it again");
                if let Err(e) = self.apply_plan().await {
                    self.last_error = Some(e);
                }
            }
            Err(e) => self.last_error = Some(chain(&e)),
        }
    }

    async fn status(&self) -> Status {
        let wan = self.wan_ifname();
        let state = self.netlink.link_state(&wan).await.ok().flatten();
        let wan_addresses = self
            .netlink
            .ipv4_addresses(&wan)
            .await
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut addresses = Vec::new();
        let mut seen = BTreeSet::new();
        for a in &self.plan.links.addresses {
            if a.ifname == wan || !seen.insert(a.ifname.clone()) {
                continue;
            }
            for addr in self
                .netlink
                .ipv4_addresses(&a.ifname)
                .await
                .unwrap_or_default()
            {
                addresses.push(format!("{} {addr}", a.ifname));
            }
        }
        let mut children = Vec::new();
        if let Some(d) = &self.dnsmasq {
            children.push(child("dnsmasq", d.status()));
        }
        if let Some(c) = &self.chronyd {
            children.push(child("chronyd", c.status()));
        }
        if let Some(c) = &self.dhcp_client {
            children.push(child("udhcpc", c.status()));
        }
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_path: self.inputs.config.display().to_string(),
            policy: self.plan.policy.clone(),
            plan_hash: self.plan_hash.clone(),
            last_apply_unix: self.last_apply,
            last_error: self.last_error.clone(),
            warnings: self.plan.warnings.iter().map(ToString::to_string).collect(),
            wan: WanStatus {
                ifname: wan,
                mode: match self.checked.config.wan.mode {
                    WanMode::Dhcp => "dhcp".into(),
                    WanMode::Static => "static".into(),
                },
                up: state.is_some_and(|s| s.up),
                carrier: state.is_some_and(|s| s.carrier),
                addresses: wan_addresses,
                lease: self.lease.clone(),
                ready: self.wan_up(),
                last_change_unix: self.wan_last_change,
            },
            addresses,
            children,
            started_unix: self.started,
        }
    }
}

fn child(name: &str, s: router_sys::supervise::ChildStatus) -> ChildState {
    ChildState {
        name: name.to_string(),
        pid: s.pid,
        running: s.running,
        restarts: s.restarts,
        last_exit: s.last_exit,
    }
}
