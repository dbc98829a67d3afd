//! A real DNS server on 127.0.0.1 for the tests (`dns_server.py`, Python's dnslib),
//! whose answers a test changes while the gateway runs, and which can be stopped to
//! make an outage. Killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::STEP;

pub struct DnsServer {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl DnsServer {
    /// Starts a server that answers `names` (each with its addresses; others are
    /// NXDOMAIN) with records of `ttl` seconds.
    pub fn start(names: &[(&str, &[&str])], ttl: u32) -> DnsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/dns_server.py");
        let server = DnsServer {
            child: Command::new("python3")
                .arg(script)
                .arg(dir.path().join("records.json"))
                .arg(dir.path().join("queries.log"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("python3 runs (the DNS tests need python3 with dnslib)"),
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
        };
        server.answer(names, ttl);
        let mut server = server;
        let stdout = server.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STEP).unwrap_or_default();
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("the DNS server did not start (is dnslib installed?): {line:?}")
            });
        server.addr = SocketAddr::from(([127, 0, 0, 1], port));
        server
    }

    /// From now on, answer `names` with records of `ttl` seconds. The file is replaced
    /// whole, so a query never reads half of it.
    pub fn answer(&self, names: &[(&str, &[&str])], ttl: u32) {
        let names: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .map(|(name, addresses)| (name.to_string(), serde_json::json!(addresses)))
            .collect();
        let text = serde_json::json!({ "ttl": ttl, "names": names }).to_string();
        let temporary = self.dir.path().join("records.json.new");
        std::fs::write(&temporary, text).expect("write records");
        std::fs::rename(&temporary, self.records()).expect("replace records");
    }

    fn records(&self) -> PathBuf {
        self.dir.path().join("records.json")
    }

    /// Every query so far, as `NAME TYPE` lines.
    pub fn queries(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("queries.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Stops the server: from now on queries go unanswered (port unreachable).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
