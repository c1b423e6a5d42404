//! etcd + kube-apiserver (+ kube-scheduler) as child processes of the test.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tempfile::TempDir;

use crate::binaries::Binaries;
use crate::process::{self, ManagedProcess};
use crate::{Error, Result, SchedulerConfig, pki};

/// Set to keep the control plane's temp dir (logs, etcd data, kubeconfig) after the test.
pub const KEEP_ENV: &str = "GPU_AUTOSCALER_KEEP_CONTROL_PLANE";

/// How many times a component is restarted on fresh ports after losing a port race.
const PORT_ATTEMPTS: usize = 5;
/// Time for children to exit after SIGTERM before they get SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
const READY_POLL: Duration = Duration::from_millis(50);

/// The processes of a control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeScheduler,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeScheduler => "kube-scheduler",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Component::Etcd,
            Component::KubeApiserver,
            Component::KubeScheduler,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running child process of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentPid {
    pub component: Component,
    pub pid: u32,
}

/// Options for [`ControlPlane`]; see [`ControlPlane::builder`].
#[derive(Debug, Clone)]
pub struct ControlPlaneBuilder {
    scheduler: Option<SchedulerConfig>,
    extra_apiserver_args: Vec<String>,
    start_timeout: Duration,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        ControlPlaneBuilder {
            scheduler: None,
            extra_apiserver_args: Vec::new(),
            // Generous: a cold 2-core CI box running several tests in parallel is far slower
            // than the ~5 s a single start takes.
            start_timeout: Duration::from_secs(90),
        }
    }
}

impl ControlPlaneBuilder {
    /// Also run kube-scheduler with this configuration: a [`SchedulerConfig`], an
    /// [`crate::ExtenderConfig`], or a YAML `KubeSchedulerConfiguration` (`&str`/`String`).
    pub fn with_scheduler(mut self, config: impl Into<SchedulerConfig>) -> Self {
        self.scheduler = Some(config.into());
        self
    }

    /// Also run kube-scheduler with its default profile.
    pub fn with_default_scheduler(self) -> Self {
        self.with_scheduler(SchedulerConfig::new())
    }

    /// Extra kube-apiserver flags, e.g. `--feature-gates=...`; later flags win.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_apiserver_args.push(arg.into());
        self
    }

    /// How long the whole start may take before it fails (default 90 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    pub async fn start(self) -> Result<ControlPlane> {
        ControlPlane::start_with(self).await
    }
}

/// Processes plus their directory; tearing down in this order (children first, then files)
/// is shared by a failed start and a normal drop.
struct Running {
    processes: Vec<ManagedProcess>,
    root: Option<TempDir>,
}

impl Running {
    fn dir(&self) -> &Path {
        self.root
            .as_ref()
            .map_or(Path::new("/nonexistent"), TempDir::path)
    }

    fn shutdown(&mut self) {
        process::terminate_all(&mut self.processes, STOP_GRACE);
        if let Some(root) = self.root.take() {
            if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
                let kept = root.keep();
                eprintln!(
                    "gpu-autoscaler-testkit: kept control plane files in {}",
                    kept.display()
                );
            } else if std::thread::panicking() {
                eprintln!(
                    "gpu-autoscaler-testkit: removing control plane logs in {}; set {KEEP_ENV}=1 to keep them",
                    root.path().display()
                );
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A private Kubernetes 1.20 control plane for one test.
///
/// Dropping it (or [`ControlPlane::stop`]) stops every process and deletes its files.
pub struct ControlPlane {
    client: Client,
    config: Config,
    server_url: String,
    etcd_url: String,
    admin_token: String,
    ca_pem: String,
    ca_path: PathBuf,
    kubeconfig_path: PathBuf,
    startup_time: Duration,
    running: Running,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("etcd_url", &self.etcd_url)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// etcd + kube-apiserver, no scheduler.
    pub async fn start() -> Result<ControlPlane> {
        Self::builder().start().await
    }

    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    async fn start_with(options: ControlPlaneBuilder) -> Result<ControlPlane> {
        let began = Instant::now();
        let deadline = began + options.start_timeout;
        let bins = Binaries::locate(options.scheduler.is_some())?;

        let root = temp_root()?;
        let mut running = Running {
            processes: Vec::new(),
            root: Some(root),
        };
        let dir = running.dir().to_path_buf();
        for sub in ["etcd", "apiserver", "scheduler", "pki"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("creating {}/{sub}", dir.display()), e))?;
        }

        let pki = pki::generate()?;
        let ca_path = dir.join("pki/ca.crt");
        let serving_cert = dir.join("pki/apiserver.crt");
        let serving_key = dir.join("pki/apiserver.key");
        let sa_key = dir.join("pki/service-account.key");
        let sa_pub = dir.join("pki/service-account.pub");
        let tokens = dir.join("pki/tokens.csv");
        let admin_token = random_token()?;
        write(&ca_path, &pki.ca_pem)?;
        write(&serving_cert, &pki.serving_cert_pem)?;
        write(&serving_key, &pki.serving_key_pem)?;
        write(&sa_key, &pki.service_account_key_pem)?;
        write(&sa_pub, &pki.service_account_public_pem)?;
        write(
            &tokens,
            &format!("{admin_token},admin,admin-uid,\"system:masters\"\n"),
        )?;

        // etcd
        let etcd_dir = dir.join("etcd");
        let etcd_port = start_with_port_retry(
            &mut running,
            deadline,
            |attempt| {
                let client_port = process::free_port()?;
                let mut peer_port = process::free_port()?;
                while peer_port == client_port {
                    peer_port = process::free_port()?;
                }
                let client_url = format!("http://127.0.0.1:{client_port}");
                let peer_url = format!("http://127.0.0.1:{peer_port}");
                let args = vec![
                    "--name=testkit".to_string(),
                    format!(
                        "--data-dir={}",
                        etcd_dir.join(format!("data-{attempt}")).display()
                    ),
                    format!("--listen-client-urls={client_url}"),
                    format!("--advertise-client-urls={client_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster=testkit={peer_url}"),
                    "--initial-cluster-state=new".to_string(),
                    // A single member on loopback: short raft timers make the first election
                    // take tens of milliseconds instead of most of a second.
                    "--heartbeat-interval=20".to_string(),
                    "--election-timeout=200".to_string(),
                    "--logger=zap".to_string(),
                    "--log-outputs=stderr".to_string(),
                ];
                let p = ManagedProcess::spawn(
                    Component::Etcd.name(),
                    &bins.etcd,
                    &args,
                    &etcd_dir,
                    &etcd_dir.join("etcd.log"),
                )?;
                Ok((p, client_port))
            },
            |_port, log| async move {
                // Printed right after etcd bound both listeners; it serves once it has elected
                // itself leader a moment later. kube-apiserver only needs the port to accept
                // connections to get past its preflight check, and retries storage calls until
                // etcd serves, so its own slow initialisation overlaps etcd's election.
                process::log_contains(&log, "starting an etcd server")
            },
        )
        .await?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");

        // kube-apiserver
        let api_dir = dir.join("apiserver");
        let kubeconfig_path = dir.join("kubeconfig");
        let (client, config, server_url) = {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let port = process::free_port()?;
                let mut args = vec![
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".to_string(),
                    "--advertise-address=127.0.0.1".to_string(),
                    format!("--secure-port={port}"),
                    "--insecure-port=0".to_string(),
                    format!("--cert-dir={}", api_dir.join("certs").display()),
                    format!("--tls-cert-file={}", serving_cert.display()),
                    format!("--tls-private-key-file={}", serving_key.display()),
                    format!("--token-auth-file={}", tokens.display()),
                    "--authorization-mode=Node,RBAC".to_string(),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local"
                        .to_string(),
                    format!("--service-account-signing-key-file={}", sa_key.display()),
                    format!("--service-account-key-file={}", sa_pub.display()),
                    // No token controller runs, so the ServiceAccount admission plugin would
                    // reject every pod for lack of a default service account token.
                    "--disable-admission-plugins=ServiceAccount".to_string(),
                    "--service-cluster-ip-range=10.0.0.0/24".to_string(),
                    "--allow-privileged=true".to_string(),
                    // Nothing here needs the kubernetes Service endpoints kept fresh or API
                    // priority and fairness; both cost CPU on a small shared machine.
                    "--endpoint-reconciler-type=none".to_string(),
                    "--enable-priority-and-fairness=false".to_string(),
                    "--profiling=false".to_string(),
                ];
                args.extend(options.extra_apiserver_args.iter().cloned());
                let proc = ManagedProcess::spawn(
                    Component::KubeApiserver.name(),
                    &bins.kube_apiserver,
                    &args,
                    &api_dir,
                    &api_dir.join(format!("kube-apiserver-{attempt}.log")),
                )?;
                running.processes.push(proc);
                let idx = running.processes.len() - 1;

                let server_url = format!("https://127.0.0.1:{port}");
                let kubeconfig = kubeconfig_yaml(&server_url, &pki.ca_pem, &admin_token);
                write(&kubeconfig_path, &kubeconfig)?;
                let config = Config::from_custom_kubeconfig(
                    Kubeconfig::from_yaml(&kubeconfig)?,
                    &KubeConfigOptions::default(),
                )
                .await?;
                let client = Client::try_from(config.clone())?;

                match wait_apiserver_ready(&client, &mut running.processes[idx], deadline).await {
                    Ok(()) => break (client, config, server_url),
                    Err(WaitError::Exited(status)) => {
                        let lost_race = process::lost_port_race(&running.processes[idx].log);
                        if lost_race && attempt < PORT_ATTEMPTS {
                            running.processes.remove(idx);
                            continue;
                        }
                        return Err(
                            running.processes[idx].start_failed(format!("exited with {status}"))
                        );
                    }
                    Err(WaitError::Timeout(last)) => {
                        return Err(running.processes[idx].start_failed(format!(
                            "not ready within {:?}; last /readyz answer: {last}",
                            options.start_timeout
                        )));
                    }
                }
            }
        };

        // The bootstrap controller creates `default` shortly after /readyz turns green; tests
        // create things there straight away.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        loop {
            if matches!(namespaces.get_opt("default").await, Ok(Some(_))) {
                break;
            }
            if Instant::now() >= deadline {
                let idx = running.processes.len() - 1;
                return Err(
                    running.processes[idx].start_failed("namespace `default` was never created")
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }

        if let Some(sched) = &options.scheduler {
            let sched_dir = dir.join("scheduler");
            let config_path = sched_dir.join("config.yaml");
            start_with_port_retry(
                &mut running,
                deadline,
                |_attempt| {
                    let healthz_port = process::free_port()?;
                    write(&config_path, &sched.render(&kubeconfig_path, healthz_port)?)?;
                    let args = vec![
                        format!("--config={}", config_path.display()),
                        // No HTTPS serving: nothing scrapes it, and then 1.20 needs no
                        // certificates or delegated authentication.
                        "--secure-port=0".to_string(),
                        "--v=2".to_string(),
                    ];
                    let p = ManagedProcess::spawn(
                        Component::KubeScheduler.name(),
                        &bins.kube_scheduler,
                        &args,
                        &sched_dir,
                        &sched_dir.join("kube-scheduler.log"),
                    )?;
                    Ok((p, healthz_port))
                },
                |_port, log| async move {
                    // Logged once the config is parsed, the client built and the healthz port
                    // bound; the informers sync right after.
                    process::log_contains(&log, "insecurely on")
                },
            )
            .await?;
        }

        let startup_time = began.elapsed();
        tracing::info!(?startup_time, %server_url, "control plane ready");
        Ok(ControlPlane {
            client,
            config,
            server_url,
            etcd_url,
            admin_token,
            ca_pem: pki.ca_pem,
            ca_path,
            kubeconfig_path,
            startup_time,
            running,
        })
    }

    /// An admin (`system:masters`) client. It runs on the tokio runtime that called
    /// `start()`; from another runtime build one with `Client::try_from(cp.kube_config())`.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client configuration (server, CA, token), to build more clients.
    pub fn kube_config(&self) -> Config {
        self.config.clone()
    }

    /// A kubeconfig file with the admin token and the CA embedded; pass it to our binaries.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// `http://127.0.0.1:<port>` of etcd.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// Bearer token of user `admin` in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// PEM of the CA that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The control plane's temp dir (logs, etcd data, certificates, kubeconfig).
    pub fn dir(&self) -> &Path {
        self.running.dir()
    }

    /// Wall time from `start()` until the apiserver was ready (and the scheduler up).
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    pub fn has_scheduler(&self) -> bool {
        self.running
            .processes
            .iter()
            .any(|p| p.name == Component::KubeScheduler.name())
    }

    /// PIDs of the running children, so a test can check that none survive [`Self::stop`].
    pub fn pids(&self) -> Vec<ComponentPid> {
        self.running
            .processes
            .iter()
            .filter_map(|p| {
                Component::from_name(p.name).map(|component| ComponentPid {
                    component,
                    pid: p.pid(),
                })
            })
            .collect()
    }

    /// Log file of a component, if it runs.
    pub fn log_path(&self, component: Component) -> Option<&Path> {
        self.running
            .processes
            .iter()
            .rev()
            .find(|p| p.name == component.name())
            .map(|p| p.log.as_path())
    }

    /// The last `lines` lines of a component's log (empty if it does not run).
    pub fn log_tail(&self, component: Component, lines: usize) -> String {
        self.log_path(component)
            .map(|p| process::log_tail(p, lines))
            .unwrap_or_default()
    }

    /// `None` while every child runs, else which one exited and how.
    pub fn check_alive(&mut self) -> Option<(Component, String)> {
        self.running.processes.iter_mut().find_map(|p| {
            let status = p.exited()?;
            Component::from_name(p.name).map(|c| (c, status))
        })
    }

    /// Stops all processes (SIGTERM, then SIGKILL after 2 s), reaps them and deletes the
    /// temp dir. Dropping does the same.
    pub fn stop(self) {
        drop(self);
    }
}

enum WaitError {
    Exited(String),
    Timeout(String),
}

async fn wait_apiserver_ready(
    client: &Client,
    proc: &mut ManagedProcess,
    deadline: Instant,
) -> std::result::Result<(), WaitError> {
    loop {
        let last;
        if let Some(status) = proc.exited() {
            return Err(WaitError::Exited(status));
        }
        let request = http::Request::get("/readyz").body(Vec::new());
        match request {
            Ok(request) => match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Timeout(last));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Spawns a component via `spawn(attempt)` and waits for `ready(port)`; if it dies because
/// its port was taken meanwhile (another test process won the race), tries again.
async fn start_with_port_retry<S, R, Fut>(
    running: &mut Running,
    deadline: Instant,
    mut spawn: S,
    ready: R,
) -> Result<u16>
where
    S: FnMut(usize) -> Result<(ManagedProcess, u16)>,
    R: Fn(u16, PathBuf) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for attempt in 1..=PORT_ATTEMPTS {
        let (proc, port) = spawn(attempt)?;
        running.processes.push(proc);
        let idx = running.processes.len() - 1;
        loop {
            if let Some(status) = running.processes[idx].exited() {
                if process::lost_port_race(&running.processes[idx].log) && attempt < PORT_ATTEMPTS {
                    running.processes.remove(idx);
                    break;
                }
                return Err(running.processes[idx].start_failed(format!("exited with {status}")));
            }
            if ready(port, running.processes[idx].log.clone()).await {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(running.processes[idx].start_failed("not healthy in time"));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
    Err(Error::StartFailed {
        component: "port allocation",
        reason: format!("lost the port race {PORT_ATTEMPTS} times"),
        log: running.dir().to_path_buf(),
        log_tail: String::new(),
    })
}

fn kubeconfig_yaml(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testkit
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: testkit
  context:
    cluster: testkit
    user: admin
    namespace: default
current-context: testkit
"
    )
}

const TEMP_PREFIX: &str = "gpu-autoscaler-cp-";
const OWNER_FILE: &str = "owner.pid";

/// Prefers tmpfs: etcd fsyncs every write, and on a shared disk that dominates startup.
/// Records the owning test process so that later runs can sweep what a SIGKILLed run left.
fn temp_root() -> Result<TempDir> {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix(TEMP_PREFIX);
        b
    };
    let shm = Path::new("/dev/shm");
    let dir = match builder.tempdir_in(shm) {
        Ok(dir) => dir,
        Err(_) => builder
            .tempdir()
            .map_err(|e| Error::io("creating the control plane temp dir", e))?,
    };
    if let Some(parent) = dir.path().parent() {
        sweep_orphans(parent);
    }
    write(
        &dir.path().join(OWNER_FILE),
        &std::process::id().to_string(),
    )?;
    Ok(dir)
}

/// Removes control-plane dirs whose owning test process no longer exists (it was killed
/// before its destructors ran; PR_SET_PDEATHSIG already took care of the processes).
fn sweep_orphans(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !is_ours {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(owner) = owner
            && !process::pid_alive(owner)
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
