//! A real Prometheus server for the tests: Debian's `/usr/bin/prometheus` with its own
//! config and TSDB in a temp dir, scraping the given targets every second (or as a
//! given config says), killed on drop. It can be stopped and started again on the
//! same port and data.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{free_port, try_get};

pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `/metrics` on each target every second.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: graygate\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Prometheus::with_files(&[("prometheus.yml", config)])
    }

    /// Runs with these files in its directory: `prometheus.yml`, and any rule files it
    /// names (relative names are read from beside it).
    pub fn with_files(files: &[(&str, String)]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut prometheus = Prometheus {
            child: None,
            port: free_port(),
            dir,
        };
        prometheus.resume();
        prometheus
    }

    /// Starts the server again after [`Prometheus::stop`], with the same data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prometheus.log"))
            .unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run /usr/bin/prometheus ({e}): apt-get install prometheus")
            });
        self.child = Some(child);
    }

    /// Kills the server; its data stays for [`Prometheus::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An instant query's result vector, or `None` while the server is not up.
    pub async fn query(&self, promql: &str) -> Option<Vec<Value>> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let (status, body) = try_get(&self.url(&format!("/api/v1/query?{query}"))).await?;
        if status != 200 {
            return None;
        }
        let value: Value = serde_json::from_str(&body).ok()?;
        value["data"]["result"].as_array().cloned()
    }

    /// An instant query's result vector, or what went wrong (the server's error for a
    /// query it refused).
    pub async fn query_result(&self, promql: &str) -> Result<Vec<Value>, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let (status, body) = try_get(&self.url(&format!("/api/v1/query?{query}")))
            .await
            .ok_or("Prometheus did not answer")?;
        let value: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match (status.as_u16(), value["data"]["result"].as_array()) {
            (200, Some(result)) => Ok(result.clone()),
            _ => Err(format!("{status}: {}", value["error"])),
        }
    }

    /// The alerts, pending and firing (`/api/v1/alerts`), or `None` while the server is
    /// not up.
    pub async fn alerts(&self) -> Option<Vec<Value>> {
        let (status, body) = try_get(&self.url("/api/v1/alerts")).await?;
        if status != 200 {
            return None;
        }
        let value: Value = serde_json::from_str(&body).ok()?;
        value["data"]["alerts"].as_array().cloned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
