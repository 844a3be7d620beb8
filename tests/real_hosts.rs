//! Real hosts (issue 17, item 4): a mutual-TLS federation across Linux network namespaces,
//! with one client's link cut in the middle of the run.
//!
//! Loopback tests cannot show what a lost host looks like: a process that dies closes its
//! sockets, and the server's kernel learns it at once. A cut link sends nothing at all (no FIN,
//! no RST), so the server only learns from silence. Here the server and three clients each run
//! in their own network namespace with their own address, joined by veth pairs to a bridge
//! that lives in a fifth namespace (nothing is added to the machine's own network, and the
//! names carry the process id and a timestamp, so parallel runs cannot collide). When the
//! server opens round 3, `client-2`'s interface goes down inside its namespace.
//!
//! The run must finish every round, and equal a reference run over the same hosts in which
//! `client-2` stops after the same number of accepted updates without telling the server
//! (`synfed join --stop-after-updates K`): the same rounds (examples, losses, accuracy) and a
//! byte-identical final checkpoint. K is read from the cut run's `rounds.csv` (the rounds with
//! all three updates), because a cut can lose the race against a fast client's next upload
//! (then K is 3, not 2); the test requires that the cut took the last round's update away.
//!
//! Needs root and `ip netns` (iproute2, veth and bridge support): elsewhere the test prints
//! why it was skipped and passes. The reference's building block, a client that stops without
//! leaving, is also checked on loopback, where no root is needed. Namespaces and processes are removed by a drop guard, also
//! when the test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 4;
/// The cut comes when the server opens this round, after the client's update for the round
/// before was accepted.
const CUT_AT_ROUND: u64 = 3;
const SERVER_ADDR: &str = "10.77.0.1";
const SERVER_NAME: &str = "server.synfed.test";
const CLIENTS: usize = 3;
/// The client whose link is cut.
const CUT: usize = 2;

/// The hosts: network namespaces `{prefix}-srv`, `{prefix}-c0` … on a bridge in
/// `{prefix}-sw`, and the processes started in them. Dropping it kills the processes and
/// deletes the namespaces (with them their interfaces).
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

/// Runs `ip args`, returning its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Lab {
    /// The server's host and the clients' hosts, each with `eth0` on the bridge.
    fn create() -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut lab = Lab {
            prefix: format!("sf{}-{}", std::process::id(), nanos % 1_000_000),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let switch = lab.add_namespace("sw")?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        let mut hosts = vec![("srv".to_string(), SERVER_ADDR.to_string())];
        hosts.extend((0..CLIENTS).map(|k| (format!("c{k}"), format!("10.77.0.{}", 11 + k))));
        for (host, addr) in hosts {
            let ns = lab.add_namespace(&host)?;
            ip(&[
                "link", "add", "name", "eth0", "netns", &ns, "type", "veth", "peer", "name", &host,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &host, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &host, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn add_namespace(&mut self, host: &str) -> Result<String, String> {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Starts the built `synfed` with `args` on `host`; stdout and stderr go to `log`, or
    /// stderr is piped when `log` is `None`. Returns the process's index.
    fn spawn(&mut self, host: &str, args: &[String], rust_log: &str, log: Option<&Path>) -> usize {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.ns(host),
                env!("CARGO_BIN_EXE_synfed"),
            ])
            .args(args)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                command.stdout(file.try_clone().unwrap()).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::piped());
            }
        }
        self.children
            .push(command.spawn().expect("ip netns exec starts"));
        self.children.len() - 1
    }

    /// Waits for process `i` to exit, at most `limit`.
    fn wait(&mut self, i: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.children[i].try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_all(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_all();
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleaning up: {e}");
            }
        }
    }
}

/// Why this machine cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() != Some("0") {
        return Some("network namespaces need root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip netns` does not work here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` command (iproute2): {e}")),
    }
}

/// A CA, the server's certificate for [`SERVER_NAME`] and one client certificate, as files in
/// `dir`: (ca, server cert, server key, client cert, client key).
fn pki(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
    let texts = [ca.pem(), server_cert, server_key, client_cert, client_key];
    let names = [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ];
    std::array::from_fn(|i| {
        let path = dir.join(names[i]);
        std::fs::write(&path, &texts[i]).unwrap();
        path
    })
}

/// A tiny FedAvg run (width-16 MLP, demo-mnist, 200 local steps) with mutual TLS, quick to
/// drop a silent client and quick to end.
fn run_config(pki: &[PathBuf; 5]) -> String {
    format!(
        r#"seed = 5
rounds = {ROUNDS}
algorithm = "fedavg"

[model]
arch = "mlp"
width = 16

[data]
name = "demo-mnist"
eval_limit = 100

[training]
lr = 0.1
batch_size = 8
local_epochs = 0
local_steps = 200

[sampling]
min_clients = {CLIENTS}
min_updates = 1

[timing]
round_timeout_s = 10.0
pull_timeout_s = 1.0
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 2.0
wait_for_clients_s = 30.0
linger_s = 1.0

[security]
tls_cert = "{}"
tls_key = "{}"
client_ca = "{}"
"#,
        pki[1].display(),
        pki[2].display(),
        pki[0].display()
    )
}

/// What one federation over the lab's hosts left behind.
struct Outcome {
    rounds_csv: String,
    checkpoint: Vec<u8>,
    /// When the link was cut, if it was.
    cut: Option<Instant>,
}

/// Removes ANSI escape sequences (colours), should a log line carry them.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `synfed serve` on the server's host and `synfed join` on each client's host, client
/// `CUT` with `--stop-after-updates stop_after` when given; cuts that client's link when the
/// server opens round [`CUT_AT_ROUND`] if `cut` is set. Waits for the server (and the clients
/// that are still connected) to finish.
fn federation(
    lab: &mut Lab,
    dir: &Path,
    config: &Path,
    pki: &[PathBuf; 5],
    port: u16,
    stop_after: Option<u64>,
    cut: bool,
) -> Outcome {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("run");
    let listen = format!("{SERVER_ADDR}:{port}");
    let server_args: Vec<String> = [
        "serve",
        "--config",
        &config.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--listen",
        &listen,
    ]
    .map(String::from)
    .to_vec();
    let server = lab.spawn("srv", &server_args, "info", None);

    // The server's log, read as it comes; the cut is made from this thread, as soon as the
    // line that opens round CUT_AT_ROUND arrives.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let cut_at = Arc::new(Mutex::new(None::<Instant>));
    let stderr = lab.children[server].stderr.take().unwrap();
    let reader = {
        let (log, cut_at) = (Arc::clone(&log), Arc::clone(&cut_at));
        let victim = lab.ns(&format!("c{CUT}"));
        let trigger = format!("round={CUT_AT_ROUND}");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = plain(&line);
                let opens = line.contains("round open")
                    && line.split_whitespace().any(|word| word == trigger);
                if cut && opens && cut_at.lock().unwrap().is_none() {
                    ip(&["-n", &victim, "link", "set", "eth0", "down"]).unwrap();
                    *cut_at.lock().unwrap() = Some(Instant::now());
                }
                log.lock().unwrap().push(line);
            }
        })
    };

    let url = format!("https://{listen}");
    let clients: Vec<usize> = (0..CLIENTS)
        .map(|k| {
            let mut args: Vec<String> = [
                "join",
                "--server",
                &url,
                "--name",
                &format!("client-{k}"),
                "--data",
                "demo-mnist",
                "--partition",
                &format!("{k}/{CLIENTS}"),
                "--device",
                "cpu",
                "--tls-ca",
                &pki[0].display().to_string(),
                "--tls-cert",
                &pki[3].display().to_string(),
                "--tls-key",
                &pki[4].display().to_string(),
                "--tls-domain",
                SERVER_NAME,
            ]
            .map(String::from)
            .to_vec();
            if let (Some(k_updates), true) = (stop_after, k == CUT) {
                args.push("--stop-after-updates".into());
                args.push(k_updates.to_string());
            }
            let log = dir.join(format!("client-{k}.log"));
            lab.spawn(&format!("c{k}"), &args, "warn", Some(&log))
        })
        .collect();

    let status = lab.wait(server, Duration::from_secs(90));
    let _ = reader.join();
    let server_log = log.lock().unwrap().join("\n");
    let status = status.unwrap_or_else(|| panic!("the server did not finish:\n{server_log}"));
    assert!(status.success(), "the server failed:\n{server_log}");
    assert!(
        server_log.contains(&format!("round={ROUNDS}")) && server_log.contains("run finished"),
        "{server_log}"
    );
    // The connected clients learn that the run is over and leave; the cut one cannot.
    for (k, &i) in clients.iter().enumerate() {
        if cut && k == CUT {
            continue;
        }
        let client_log = || std::fs::read_to_string(dir.join(format!("client-{k}.log"))).unwrap();
        let status = lab.wait(i, Duration::from_secs(20));
        let status =
            status.unwrap_or_else(|| panic!("client-{k} did not finish:\n{}", client_log()));
        assert!(status.success(), "client-{k} failed:\n{}", client_log());
        let expected = if stop_after.is_some() && k == CUT {
            "stopped without leaving"
        } else {
            "the run is over"
        };
        assert!(
            client_log().contains(expected),
            "client-{k}:\n{}",
            client_log()
        );
    }
    lab.kill_all();
    let cut_at = *cut_at.lock().unwrap();
    Outcome {
        rounds_csv: std::fs::read_to_string(out.join("rounds.csv")).unwrap(),
        checkpoint: std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        cut: cut_at,
    }
}

/// `rounds.csv` as one map of column → value per round.
fn rows(csv: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn a_tls_federation_across_namespaces_survives_a_cut_link() {
    if let Some(why) = unavailable() {
        println!("SKIPPED real_hosts: {why}");
        return;
    }
    let mut lab = match Lab::create() {
        Ok(lab) => lab,
        Err(why) => {
            println!("SKIPPED real_hosts: the hosts could not be set up: {why}");
            return;
        }
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let config = dir.path().join("run.toml");
    std::fs::write(&config, run_config(&pki)).unwrap();

    // The cut run.
    let cut = federation(
        &mut lab,
        &dir.path().join("cut"),
        &config,
        &pki,
        50051,
        None,
        true,
    );
    assert!(cut.cut.is_some(), "round {CUT_AT_ROUND} never opened");
    let cut_rows = rows(&cut.rounds_csv);
    assert_eq!(cut_rows.len() as u64, ROUNDS, "{}", cut.rounds_csv);
    let field = |row: &std::collections::BTreeMap<String, String>, name: &str| -> u64 {
        row[name].parse().unwrap()
    };
    // K: the rounds with every client's update, a prefix of the run
    let k = cut_rows
        .iter()
        .take_while(|r| field(r, "updates") == CLIENTS as u64)
        .count() as u64;
    assert!(
        (CUT_AT_ROUND - 1..ROUNDS).contains(&k),
        "the cut after round {} left {k} full rounds:\n{}",
        CUT_AT_ROUND - 1,
        cut.rounds_csv
    );
    for row in &cut_rows[k as usize..] {
        assert_eq!(field(row, "sampled"), CLIENTS as u64, "{}", cut.rounds_csv);
        assert_eq!(
            field(row, "updates"),
            CLIENTS as u64 - 1,
            "{}",
            cut.rounds_csv
        );
        assert_eq!(
            field(row, "refused") + field(row, "dropped"),
            1,
            "{}",
            cut.rounds_csv
        );
    }

    // The reference: the link stays up, client-2 stops after K updates without leaving.
    ip(&[
        "-n",
        &lab.ns(&format!("c{CUT}")),
        "link",
        "set",
        "eth0",
        "up",
    ])
    .unwrap();
    let reference = federation(
        &mut lab,
        &dir.path().join("reference"),
        &config,
        &pki,
        50052,
        Some(k),
        false,
    );
    let without_timing = |csv: &str| {
        rows(csv)
            .into_iter()
            .map(|mut row| {
                row.remove("seconds");
                let lost = field(&row, "refused") + field(&row, "dropped");
                row.remove("refused");
                row.remove("dropped");
                row.insert("refused+dropped".into(), lost.to_string());
                row
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_timing(&cut.rounds_csv),
        without_timing(&reference.rounds_csv),
        "cut:\n{}\nreference:\n{}",
        cut.rounds_csv,
        reference.rounds_csv
    );
    assert!(
        cut.checkpoint == reference.checkpoint,
        "the final checkpoints differ"
    );
    println!(
        "real_hosts: link cut in round {}, {k} full rounds, equal to the reference; {:.1} s",
        k + 1,
        started.elapsed().as_secs_f64()
    );
}

/// The reference's building block, on loopback (no root needed): a client started with
/// `--stop-after-updates 1` leaves no Leave behind, so the server keeps sampling it and drops it
/// for silence in rounds 2 and 3, which finish with the other client's update alone.
#[test]
fn a_client_that_stops_without_leaving_is_dropped_from_later_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "seed = 3\nrounds = 3\n[model]\narch = \"mlp\"\nwidth = 16\n[data]\nname = \"demo-mnist\"\n\
         eval_limit = 50\n[sampling]\nmin_clients = 2\n[timing]\npull_timeout_s = 0.5\n\
         heartbeat_interval_s = 0.2\nheartbeat_timeout_s = 1.0\nwait_for_clients_s = 30.0\n\
         linger_s = 0.5\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let mut server = Command::new(env!("CARGO_BIN_EXE_synfed"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("serving on ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let join = |k: usize, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_synfed"))
            .args([
                "join",
                "--server",
                &format!("http://{addr}"),
                "--data",
                "demo-mnist",
            ])
            .args([
                "--name",
                &format!("client-{k}"),
                "--partition",
                &format!("{k}/2"),
            ])
            .args(["--device", "cpu"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let (stopped, stayed) = std::thread::scope(|s| {
        let stopped = s.spawn(|| join(0, &["--stop-after-updates", "1"]));
        let stayed = s.spawn(|| join(1, &[]));
        (stopped.join().unwrap(), stayed.join().unwrap())
    });
    let status = server.wait().unwrap();
    assert!(status.success());
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(
        text(&stopped).contains("client-0: stopped without leaving; 1 updates accepted"),
        "{}",
        text(&stopped)
    );
    assert!(
        text(&stayed).contains("client-1: the run is over; 3 updates accepted"),
        "{}",
        text(&stayed)
    );
    let rounds = rows(&std::fs::read_to_string(out.join("rounds.csv")).unwrap());
    let counts: Vec<(String, String, String)> = rounds
        .iter()
        .map(|r| {
            (
                r["sampled"].clone(),
                r["updates"].clone(),
                r["dropped"].clone(),
            )
        })
        .collect();
    let row = |s: &str, u: &str, d: &str| (s.to_string(), u.to_string(), d.to_string());
    assert_eq!(
        counts,
        vec![row("2", "2", "0"), row("2", "1", "1"), row("2", "1", "1")]
    );
}
