//! The command line, end to end: the real `graygate` binary's exit codes, its config
//! error messages, `explain` JSON, `demo` driven by real `curl`, and serving.
//!
//! Every child process is bounded in time and killed on drop.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use graygate::config::ConfigFile;
use graygate::routing::bucket;
use serde_json::Value;

/// Upper bound for a short-lived command (check, explain, curl) to finish.
const LIMIT: Duration = Duration::from_secs(30);
/// Upper bound for a long-running process to print what it promises.
const STARTUP: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn invalid(name: &str) -> String {
    path_text(&manifest_dir().join("tests/data/invalid").join(name))
}

fn demo_config() -> String {
    path_text(&manifest_dir().join("config/demo.toml"))
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_string()
}

/// A child process, killed and reaped on drop whatever happens to the test.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(mut command: Command) -> Proc {
        let what = format!("{command:?}");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        Proc { child, what }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Sends SIGTERM and asserts a clean exit (0) within [`SHUTDOWN`].
    fn terminate_cleanly(&mut self) {
        self.sigterm();
        let status = self
            .wait_exit(SHUTDOWN)
            .unwrap_or_else(|| panic!("{} still running {SHUTDOWN:?} after SIGTERM", self.what));
        assert_eq!(status.code(), Some(0), "{} after SIGTERM", self.what);
    }

    /// Streams stdout (or stderr) line by line to a channel.
    fn lines(&mut self, stdout: bool) -> Receiver<String> {
        let pipe: Box<dyn Read + Send> = if stdout {
            Box::new(self.child.stdout.take().expect("stdout piped"))
        } else {
            Box::new(self.child.stderr.take().expect("stderr piped"))
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Receives lines until one satisfies `done`; returns every line seen, that one last.
fn read_until(rx: &Receiver<String>, what: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + STARTUP;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stop = done(&line);
                seen.push(line);
                if stop {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no {what} within {STARTUP:?}; output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// What a finished command printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn read_all(pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(pipe).read_to_string(&mut text);
        text
    })
}

/// Runs a command to completion within [`LIMIT`], or kills it and fails.
fn run(command: Command) -> Ran {
    let mut proc = Proc::spawn(command);
    let stdout = read_all(proc.child.stdout.take().expect("stdout"));
    let stderr = read_all(proc.child.stderr.take().expect("stderr"));
    let status = proc
        .wait_exit(LIMIT)
        .unwrap_or_else(|| panic!("{} did not finish within {LIMIT:?}", proc.what));
    Ran {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn graygate_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_graygate"));
    command.args(args).env("RUST_LOG", "info");
    command
}

fn graygate(args: &[&str]) -> Ran {
    run(graygate_command(args))
}

/// `graygate check` on an invalid file: exit 1 and its stderr lines.
fn check_fails(path: &str) -> Vec<String> {
    let ran = graygate(&["check", "--config", path]);
    assert_eq!(ran.code, Some(1), "check {path}; stderr:\n{}", ran.stderr);
    assert!(ran.stdout.is_empty(), "nothing on stdout: {}", ran.stdout);
    ran.stderr.lines().map(str::to_string).collect()
}

/// `check` rejects `tests/data/invalid/NAME` with exactly one error, exactly
/// `PATH:AT: KEY: MESSAGE`.
fn assert_rejected(name: &str, at: &str, key: &str, message: &str) {
    let path = invalid(name);
    let lines = check_fails(&path);
    assert_eq!(
        lines,
        [format!("{path}:{at}: {key}: {message}"), "1 error".into()]
    );
}

/// As [`assert_rejected`], for messages whose tail comes from the OS or a library:
/// the one error line starts with `PATH:START`.
fn assert_rejected_starting(name: &str, start: &str) {
    let path = invalid(name);
    let lines = check_fails(&path);
    assert_eq!(lines.len(), 2, "one error and the count: {lines:#?}");
    let want = format!("{path}:{start}");
    assert!(lines[0].starts_with(&want), "{:?}\nwant {want:?}", lines[0]);
    assert_eq!(lines[1], "1 error");
}

fn explain(extra: &[&str]) -> Value {
    let config = demo_config();
    let mut args = vec!["explain", "--config", config.as_str()];
    args.extend_from_slice(extra);
    let ran = graygate(&args);
    assert_eq!(
        ran.code,
        Some(0),
        "explain {extra:?}; stderr:\n{}",
        ran.stderr
    );
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("explain output is not JSON ({e}):\n{}", ran.stdout))
}

fn demo_rule_names() -> Vec<String> {
    let text = std::fs::read_to_string(demo_config()).expect("read demo.toml");
    let file: ConfigFile = toml::from_str(&text).expect("demo.toml parses");
    file.rules.into_iter().map(|r| r.name).collect()
}

/// The first user id (from 2000) whose bucket under the demo salt is or is not < 50.
fn demo_user(inside: bool) -> String {
    (2000u32..)
        .map(|id| id.to_string())
        .find(|id| (bucket(b"demo", id.as_bytes()) < 50) == inside)
        .expect("some id on each side")
}

// ---------------------------------------------------------------------------------
// check: valid files
// ---------------------------------------------------------------------------------

#[test]
fn check_accepts_every_example_config() {
    let dir = manifest_dir().join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read config/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.toml in {}", dir.display());
    for file in files {
        let path = path_text(&file);
        let ran = graygate(&["check", "--config", &path]);
        assert_eq!(ran.code, Some(0), "check {path}; stderr:\n{}", ran.stderr);
        assert!(
            ran.stdout.starts_with(&format!("{path}: ok")),
            "check {path} prints ok: {:?}",
            ran.stdout
        );
    }
}

// ---------------------------------------------------------------------------------
// check: invalid files, one problem each
// ---------------------------------------------------------------------------------

#[test]
fn rejects_unknown_top_level_key() {
    assert_rejected(
        "unknown_top_level_key.toml",
        "7:2",
        "extra",
        "unknown key `extra`; expected one of `server`, `limits`, `pools`, `routing`, `rules`, `log`, `rollout`, `mirror`",
    );
}

#[test]
fn rejects_unknown_key_in_a_rule_match() {
    // The rest of the file is checked without the unknown key: the match it was in is
    // then empty, which is an error too.
    let path = invalid("unknown_match_key.toml");
    assert_eq!(
        check_fails(&path),
        [
            format!(
                "{path}:9:9: rules[0].match: a rule needs at least one condition; to send all traffic to a pool, set routing.stable"
            ),
            format!(
                "{path}:9:11: rules[0].match.bogus: unknown key `bogus`; expected one of `header`, \
                 `whitelist`, `whitelist_file`, `city`, `ua`, `channel`, `permille`, `salt`, `rate`"
            ),
            "2 errors".to_string(),
        ]
    );
}

#[test]
fn rejects_toml_syntax_error_with_its_line_and_column() {
    assert_rejected_starting("syntax_error.toml", "5:15: invalid basic string");
}

#[test]
fn rejects_rule_to_an_unknown_pool() {
    assert_rejected(
        "rule_unknown_pool.toml",
        "10:6",
        "rules[0].to",
        "unknown pool `purple`; defined pools: blue",
    );
}

#[test]
fn rejects_unknown_stable_pool() {
    assert_rejected(
        "stable_unknown_pool.toml",
        "5:10",
        "routing.stable",
        "unknown pool `green`; defined pools: blue",
    );
}

#[test]
fn rejects_pool_without_endpoints() {
    assert_rejected(
        "empty_endpoints.toml",
        "5:13",
        "pools.green.endpoints",
        "a pool needs at least one endpoint",
    );
}

#[test]
fn rejects_endpoint_without_port() {
    assert_rejected(
        "endpoint_without_port.toml",
        "2:14",
        "pools.blue.endpoints[0]",
        "`127.0.0.1`: the port is missing (host:port)",
    );
}

#[test]
fn rejects_https_endpoint() {
    assert_rejected(
        "endpoint_https.toml",
        "2:14",
        "pools.blue.endpoints[0]",
        "`https://127.0.0.1:9001`: https upstreams are not supported; use http://host:port",
    );
}

#[test]
fn rejects_bad_regex() {
    assert_rejected_starting(
        "bad_regex.toml",
        "9:48: rules[0].match.header.regex: invalid regex `^llama-(3`: ",
    );
}

#[test]
fn rejects_permille_above_1000() {
    assert_rejected(
        "permille_too_big.toml",
        "10:22",
        "rules[0].match.permille",
        "must be between 0 and 1000, got 1001",
    );
}

#[test]
fn rejects_negative_permille() {
    assert_rejected(
        "permille_negative.toml",
        "10:22",
        "rules[0].match.permille",
        "must be between 0 and 1000, got -1",
    );
}

#[test]
fn rejects_rate_above_1() {
    assert_rejected(
        "rate_too_big.toml",
        "9:18",
        "rules[0].match.rate",
        "must be between 0 and 1, got 1.5",
    );
}

#[test]
fn rejects_duplicate_rule_name_naming_the_first() {
    assert_rejected(
        "duplicate_rule_name.toml",
        "18:8",
        "rules[2].name",
        "rule `a` is already defined at rules[0]",
    );
}

#[test]
fn rejects_header_match_with_exact_and_prefix() {
    assert_rejected(
        "header_exact_and_prefix.toml",
        "9:20",
        "rules[0].match.header",
        "give exactly one of `exact`, `prefix`, `regex` or `present`",
    );
}

#[test]
fn rejects_header_match_without_a_test() {
    assert_rejected(
        "header_without_test.toml",
        "9:20",
        "rules[0].match.header",
        "give exactly one of `exact`, `prefix`, `regex` or `present`",
    );
}

#[test]
fn rejects_whitelist_without_user_key() {
    assert_rejected(
        "whitelist_without_user_key.toml",
        "9:23",
        "rules[0].match.whitelist",
        "needs `routing.user_key` to say where the value is read from",
    );
}

#[test]
fn rejects_undefined_ua_class() {
    assert_rejected(
        "ua_undefined_class.toml",
        "13:24",
        "rules[0].match.ua[1]",
        "UA class `tablet` is not defined in routing.ua_classes",
    );
}

#[test]
fn rejects_salt_without_permille() {
    assert_rejected(
        "salt_without_permille.toml",
        "10:30",
        "rules[0].match.salt",
        "`salt` only applies together with `permille`",
    );
}

#[test]
fn rejects_unreadable_whitelist_file_naming_the_resolved_path() {
    let resolved = invalid("no-such-staff.txt");
    assert_rejected_starting(
        "whitelist_file_missing.toml",
        &format!("10:28: rules[0].match.whitelist_file: cannot read {resolved}: "),
    );
}

#[test]
fn rejects_rule_with_empty_match() {
    assert_rejected(
        "empty_match.toml",
        "9:9",
        "rules[0].match",
        "a rule needs at least one condition; to send all traffic to a pool, set routing.stable",
    );
}

#[test]
fn rejects_max_header_bytes_below_8192() {
    assert_rejected(
        "max_header_bytes_too_small.toml",
        "2:20",
        "limits.max_header_bytes",
        "must be between 8192 and 16777216, got 4096",
    );
}

#[test]
fn reports_every_problem_of_a_file_with_several() {
    let path = invalid("several_problems.toml");
    let lines = check_fails(&path);
    let want = [
        "2:20: limits.max_header_bytes: must be between 8192 and 16777216, got 100",
        "8:13: pools.green.endpoints: a pool needs at least one endpoint",
        "11:10: routing.stable: unknown pool `purple`; defined pools: blue, green",
        "15:22: rules[0].match.permille: needs `routing.user_key` to say where the value is read from",
        "15:22: rules[0].match.permille: must be between 0 and 1000, got 2000",
    ];
    for error in want {
        let line = format!("{path}:{error}");
        assert!(lines.contains(&line), "missing {line:?} in {lines:#?}");
    }
    assert_eq!(lines.len(), want.len() + 1, "{lines:#?}");
    assert_eq!(lines.last().unwrap(), "5 errors");
}

#[test]
fn reports_every_unknown_key_with_its_place_and_the_other_errors_too() {
    let path = invalid("unknown_keys_and_more.toml");
    let want: Vec<String> = [
        "3:1: server.lisen: unknown key `lisen`; did you mean `listen`?",
        "7:1: pools.blue.endpoint: unknown key `endpoint`; did you mean `endpoints`?",
        "11:1: routing.fallbak: unknown key `fallbak`; did you mean `fallback`?",
        "15:22: rules[0].match.permille: needs `routing.user_key` to say where the value is read from",
        "15:22: rules[0].match.permille: must be between 0 and 1000, got 2000",
        "16:6: rules[0].to: unknown pool `green`; defined pools: blue",
    ]
    .iter()
    .map(|line| format!("{path}:{line}"))
    .chain(["6 errors".to_string()])
    .collect();
    assert_eq!(check_fails(&path), want);
}

#[test]
fn reports_unknown_keys_beside_a_type_error() {
    let path = invalid("unknown_key_and_type_error.toml");
    assert_eq!(
        check_fails(&path),
        [
            format!("{path}:3:6: pools.blue.lb: wanted string or table"),
            format!(
                "{path}:4:1: pools.blue.conect_timeout: unknown key `conect_timeout`; did you mean `connect_timeout`?"
            ),
            "2 errors".to_string(),
        ]
    );
}

#[test]
fn missing_routing_table_is_not_blamed_on_a_pool() {
    let path = invalid("missing_routing.toml");
    let lines = check_fails(&path);
    assert!(lines[0].contains("missing field `routing`"), "{lines:#?}");
    assert!(!lines[0].contains(": pools.blue:"), "{lines:#?}");
}

#[test]
fn endpoint_port_out_of_range_is_not_called_missing() {
    let path = invalid("endpoint_port_out_of_range.toml");
    let lines = check_fails(&path);
    let want = format!("{path}:2:14: pools.blue.endpoints[0]: `localhost:99999`: ");
    assert!(lines[0].starts_with(&want), "{lines:#?}");
    assert!(
        lines[0].ends_with("port 99999 is out of range (1-65535)"),
        "{lines:#?}"
    );
}

// ---------------------------------------------------------------------------------
// Usage errors and missing files
// ---------------------------------------------------------------------------------

#[test]
fn no_arguments_is_a_usage_error() {
    let ran = graygate(&[]);
    assert_eq!(ran.code, Some(2), "stderr:\n{}", ran.stderr);
    assert!(ran.stderr.contains("--config"), "{}", ran.stderr);
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let ran = graygate(&["frobnicate"]);
    assert_eq!(ran.code, Some(2), "stderr:\n{}", ran.stderr);
    assert!(ran.stderr.contains("frobnicate"), "{}", ran.stderr);
}

#[test]
fn check_without_config_is_a_usage_error() {
    let ran = graygate(&["check"]);
    assert_eq!(ran.code, Some(2), "stderr:\n{}", ran.stderr);
    assert!(ran.stderr.contains("--config"), "{}", ran.stderr);
}

#[test]
fn explain_with_header_without_colon_is_a_usage_error() {
    let config = demo_config();
    let ran = graygate(&["explain", "--config", &config, "-H", "x-user-id 1001"]);
    assert_eq!(ran.code, Some(2), "stderr:\n{}", ran.stderr);
    assert!(
        ran.stderr.contains("expected `name: value`"),
        "{}",
        ran.stderr
    );
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);
}

#[test]
fn help_exits_0_and_lists_the_commands() {
    let ran = graygate(&["--help"]);
    assert_eq!(ran.code, Some(0), "stderr:\n{}", ran.stderr);
    for command in ["run", "check", "explain", "demo"] {
        assert!(ran.stdout.contains(command), "{command}:\n{}", ran.stdout);
    }
}

#[test]
fn missing_config_file_cannot_be_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = path_text(&dir.path().join("absent.toml"));
    for command in ["check", "explain", "run"] {
        let ran = graygate(&[command, "--config", &path]);
        assert_eq!(ran.code, Some(1), "{command}; stderr:\n{}", ran.stderr);
        assert!(
            ran.stderr.starts_with(&format!("{path}: cannot read: ")),
            "{command}: {}",
            ran.stderr
        );
    }
}

// ---------------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------------

#[test]
fn explain_whitelisted_user_goes_to_canary_by_staff() {
    let json = explain(&["-H", "x-user-id: 1001"]);
    assert_eq!(json["pool"], "canary");
    assert_eq!(json["rule"], "staff");
    assert_eq!(json["user_key"], "1001");
    let rules = json["rules"].as_array().expect("rules trace");
    assert_eq!(rules.len(), 2, "{json:#}");
    assert_eq!(rules[0]["rule"], "internal-testers");
    assert_eq!(rules[0]["matched"], false);
    assert_eq!(rules[0]["conditions"][0]["result"], "missing value");
    assert_eq!(rules[1]["rule"], "staff");
    assert_eq!(rules[1]["matched"], true);
}

#[test]
fn explain_bare_request_goes_to_stable_after_every_rule() {
    let json = explain(&[]);
    assert_eq!(json["pool"], "blue");
    assert_eq!(json["rule"], "default");
    assert_eq!(json["bucket"], Value::Null);
    let rules = json["rules"].as_array().expect("rules trace");
    let traced: Vec<&str> = rules.iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(traced, demo_rule_names());
    assert!(rules.iter().all(|r| r["matched"] == false), "{json:#}");
}

#[test]
fn explain_user_inside_the_permille_shows_its_bucket() {
    let id = demo_user(true);
    let want = bucket(b"demo", id.as_bytes());
    let json = explain(&["-H", &format!("x-user-id: {id}")]);
    assert_eq!(json["pool"], "canary");
    assert_eq!(json["rule"], "canary-50-permille");
    assert_eq!(json["bucket"], want);
    let last = json["rules"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["rule"], "canary-50-permille");
    assert_eq!(last["matched"], true);
    assert_eq!(last["conditions"][0]["bucket"], want);
}

#[test]
fn explain_user_outside_the_permille_still_shows_its_bucket() {
    let id = demo_user(false);
    let json = explain(&["-H", &format!("x-user-id: {id}")]);
    assert_eq!(json["pool"], "blue");
    assert_eq!(json["rule"], "default");
    assert_eq!(json["bucket"], bucket(b"demo", id.as_bytes()));
}

#[test]
fn explain_reads_the_channel_from_the_query() {
    let json = explain(&["--path", "/?channel=huawei"]);
    assert_eq!(json["pool"], "canary");
    assert_eq!(json["rule"], "appstore");
    assert_eq!(json["channel"], "huawei");
}

// ---------------------------------------------------------------------------------
// demo and run, as long-running processes
// ---------------------------------------------------------------------------------

/// Runs one printed `curl` command line through `sh -c`; returns the trimmed body.
fn curl(command: &str) -> String {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!("{command} --max-time 10"));
    let ran = run(sh);
    assert_eq!(ran.code, Some(0), "{command}; stderr:\n{}", ran.stderr);
    ran.stdout.trim().to_string()
}

/// The value after `prefix` on the printed line that starts with it.
fn printed_after<'a>(printed: &'a [String], prefix: &str) -> &'a str {
    printed
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("a line starting {prefix:?}: {printed:#?}"))
        .trim()
}

/// `curl -s -i URL`: the status line, the headers (lower-cased names) and the body.
fn curl_full(url: &str) -> (String, Vec<(String, String)>, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-i", "--max-time", "10", url]);
    let ran = run(command);
    assert_eq!(ran.code, Some(0), "curl {url}; stderr:\n{}", ran.stderr);
    let (head, body) = ran
        .stdout
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a head from {url}: {}", ran.stdout));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn json_at(url: &str) -> Value {
    let (status, _, body) = curl_full(url);
    assert!(status.contains(" 200"), "{url}: {status}\n{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {body}"))
}

/// Polls `ready` every 100 ms up to `limit`.
fn eventually(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn default_matches(admin: &str) -> u64 {
    let stats = json_at(&format!("http://{admin}/admin/stats"));
    let rules = stats["rules"].as_array().expect("rules");
    let default = rules
        .iter()
        .find(|r| r["name"] == "default")
        .expect("default");
    default["matches"].as_u64().expect("matches")
}

#[test]
fn demo_keeps_every_promise_it_prints() {
    let mut demo = Proc::spawn(graygate_command(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]));
    let _stderr = demo.lines(false); // drained in the background
    let stdout = demo.lines(true);
    let printed = read_until(&stdout, "\"Stop with Ctrl-C.\"", |l| {
        l.starts_with("Stop with")
    });
    assert!(
        printed
            .iter()
            .any(|l| l.contains("gateway on http://127.0.0.1:")),
        "listen address: {printed:#?}"
    );
    let promises: Vec<(&str, &str)> = printed
        .iter()
        .filter(|l| l.starts_with("  curl "))
        .map(|l| {
            let (command, promise) = l.split_once(" # -> ").expect("`# -> pool`");
            let pool = promise.split("  (").next().unwrap().trim();
            (command.trim(), pool)
        })
        .collect();
    assert!(promises.len() >= 2, "curl lines: {printed:#?}");
    // Each upstream answers `<pool> <version>`.
    let pool_of = |command: &str| {
        let body = curl(command);
        body.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut saw_random = false;
    for &(command, pool) in &promises {
        if pool == "canary or blue" {
            saw_random = true;
            let bodies: BTreeSet<String> = (0..60).map(|_| pool_of(command)).collect();
            let want: BTreeSet<String> = ["blue".into(), "canary".into()].into();
            assert_eq!(bodies, want, "{command}");
        } else {
            assert_eq!(pool_of(command), pool, "{command}");
        }
    }
    assert!(saw_random, "the random rule's line is printed");

    // The admin listener: the status page under its policy, and the metrics.
    let page_url = printed_after(&printed, "Status page:");
    let admin = page_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/admin/ui"))
        .unwrap_or_else(|| panic!("status page URL: {page_url}"))
        .to_string();
    let (status, headers, body) = curl_full(page_url);
    assert!(status.contains(" 200"), "{page_url}: {status}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    assert!(header("content-type").starts_with("text/html"));
    assert!(
        header("content-security-policy").starts_with("default-src 'none'"),
        "{headers:?}"
    );
    assert!(body.contains("<title>graygate status</title>"));
    let metrics_url = printed_after(&printed, "Metrics:");
    assert_eq!(metrics_url, format!("http://{admin}/metrics"));
    let (_, _, metrics) = curl_full(metrics_url);
    for series in [
        "graygate_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "graygate_endpoint_up{pool=\"canary\",endpoint=\"127.0.0.1:",
        "graygate_time_to_first_byte_seconds_bucket{le=\"60.0\",pool=\"blue\"}",
        "graygate_rollout_weight_permille{rule=\"web-rollout\"}",
    ] {
        assert!(metrics.contains(series), "{series} in /metrics:\n{metrics}");
    }

    // The built-in load keeps traffic flowing with no request from the test.
    let before = default_matches(&admin);
    assert!(
        eventually(Duration::from_secs(10), || default_matches(&admin)
            > before + 10),
        "the load generator sends traffic"
    );
    // The rollout the demo runs is on show.
    let rollout = json_at(&format!("http://{admin}/admin/rollout"));
    assert_eq!(rollout["rule"], "web-rollout");
    assert_eq!(rollout["steps"], serde_json::json!([250, 500, 1000]));

    // The edit it suggests: raise the canary's per-mille in the watched file. The
    // user the demo showed outside the canary's buckets is then inside.
    let config = PathBuf::from(printed_after(&printed, "Config:"));
    let text = std::fs::read_to_string(&config).expect("the demo's config file");
    let edited = text.replacen(
        "match = { permille = 50, salt = \"demo\" }",
        "match = { permille = 1000, salt = \"demo\" }",
        1,
    );
    assert_ne!(
        edited,
        text,
        "the suggested line is in {}",
        config.display()
    );
    // As an editor saves: a new file renamed over the old one.
    let saved = config.with_extension("toml.swp");
    std::fs::write(&saved, edited).expect("write the edit");
    std::fs::rename(&saved, &config).expect("rename over the config");
    let generation = || json_at(&format!("http://{admin}/admin/config"))["generation"].clone();
    assert!(
        eventually(Duration::from_secs(10), || generation() == 2),
        "the edit was applied: generation {}",
        generation()
    );
    // The user ids from 2000 are the per-mille rule's; the one shown on blue is outside.
    let outside = promises
        .iter()
        .find(|(command, pool)| command.contains("x-user-id: 2") && *pool == "blue")
        .map(|(command, _)| *command)
        .expect("a user outside the canary's buckets");
    assert_eq!(pool_of(outside), "canary", "{outside} after the edit");
    let (_, _, metrics) = curl_full(metrics_url);
    assert!(
        metrics.contains("graygate_config_reloads_total{result=\"success\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("graygate_config_generation 2\n"));

    demo.terminate_cleanly();
    assert!(!config.exists(), "the demo removes its temporary directory");
}

#[test]
fn demo_commands_refuse_bad_figures_with_usage_errors() {
    for (args, env, want) in [
        (
            &["demo-upstream", "--name", "blue", "--error-rate", "1.5"][..],
            None,
            "is not a share between 0 and 1",
        ),
        (
            &["demo-upstream", "--name", "blue"],
            Some(("GRAYGATE_DEMO_ERROR_RATE", "lots")),
            "is not a share between 0 and 1",
        ),
        (
            &["demo-upstream", "--name", "blue", "--latency", "soon"],
            None,
            "--latency",
        ),
        (&["demo", "--rate", "NaN"], None, "is not a rate"),
        (
            &["demo-load", "--target", "http://127.0.0.1:9", "--rate=-1"],
            None,
            "is not a rate",
        ),
    ] {
        let mut command = graygate_command(args);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let ran = run(command);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(want), "{args:?}: {}", ran.stderr);
    }
}

fn write_run_config(dir: &Path) -> String {
    let path = dir.join("graygate.toml");
    std::fs::write(
        &path,
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "2s"

[pools.blue]
endpoints = ["127.0.0.1:9"]

[routing]
stable = "blue"
"#,
    )
    .expect("write config");
    path_text(&path)
}

fn is_serving_line(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["fields"]["message"] == "graygate serving")
}

#[test]
fn config_without_subcommand_serves_until_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_run_config(dir.path());
    let mut gateway = Proc::spawn(graygate_command(&[
        "--log-format",
        "json",
        "--config",
        &config,
    ]));
    let _stdout = gateway.lines(true);
    let stderr = gateway.lines(false);
    read_until(
        &stderr,
        "\"graygate serving\" JSON log line",
        is_serving_line,
    );
    gateway.terminate_cleanly();
}
