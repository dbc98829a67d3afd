//! `[rollout]`: validated and compiled into a [`Plan`], every mistake an error with
//! its key path, in the same pass as the rest of the config.

use std::collections::HashMap;
use std::time::Duration;

use super::compile::Compiler;
use super::error::KeyPath;
use super::model::{self, ConfigFile, JudgeSource, ScheduleKind};
use crate::rollout::judge::JudgeSettings;
use crate::rollout::schedule::{Schedule, MAX_SAMPLES};
use crate::rollout::{Plan, Remote, Source};
use crate::routing::{PoolId, RuleId};

/// Analyses (and a follower's polls) closer together than this would only spin.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_MIN_STEP_DURATION: Duration = Duration::from_secs(300);
/// How long a follower waits for the instance it follows to answer.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bounds: beyond them a duration is a typo (and would overflow the clock).
const DAY: Duration = Duration::from_secs(86_400);
const MAX_INTERVAL: Duration = DAY;
const MAX_STEP_DURATION: Duration = Duration::from_secs(30 * 86_400);
const MAX_RAMP: Duration = Duration::from_secs(365 * 86_400);
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl Compiler<'_> {
    /// The plan, `Some(None)` without `[rollout]`, or `None` after recording errors.
    pub(super) fn rollout(
        &mut self,
        file: &ConfigFile,
        pools: &HashMap<&str, PoolId>,
    ) -> Option<Option<Plan>> {
        let Some(rollout) = &file.rollout else {
            return Some(None);
        };
        let path = KeyPath::root().key("rollout");
        let before = self.errors.len();

        let rule = self.rollout_rule(file, &rollout.rule, path.key("rule"));
        let follow = rollout.follow.as_deref().map(|url| {
            self.at_least_min_interval(rollout.follow_interval, path.key("follow_interval"));
            self.at_most(
                rollout.follow_interval,
                MAX_WAIT,
                path.key("follow_interval"),
            );
            self.remote(
                url,
                path.key("follow"),
                FOLLOW_TIMEOUT,
                rollout.follow_interval,
            )
        });
        let (steps, every) = match follow {
            // A follower takes its steps and verdicts from the instance it follows.
            Some(_) => {
                for (key, given) in [
                    ("steps", rollout.steps.is_some()),
                    ("schedule", rollout.schedule.is_some()),
                    ("judge", rollout.judge.is_some()),
                ] {
                    if given {
                        self.error(
                            path.key(key),
                            "does not apply with `follow`: a follower takes its steps and verdicts from the instance it follows",
                        );
                    }
                }
                (Some(Vec::new()), None)
            }
            None => self.rollout_steps(rollout, &path),
        };
        let min_step_duration = rollout
            .min_step_duration
            .or(every)
            .unwrap_or(DEFAULT_MIN_STEP_DURATION);
        self.at_least_min_interval(rollout.interval, path.key("interval"));
        self.at_most(rollout.interval, MAX_INTERVAL, path.key("interval"));
        if let Some(d) = rollout.min_step_duration {
            self.at_most(d, MAX_STEP_DURATION, path.key("min_step_duration"));
        }
        let min_requests = self.at_least_one(rollout.min_requests, path.key("min_requests"));
        let failure_limit = self.at_least_one(rollout.failure_limit, path.key("failure_limit"));
        let inconclusive_limit =
            self.at_least_one(rollout.inconclusive_limit, path.key("inconclusive_limit"));
        let judge_table = rollout.judge.clone().unwrap_or_default();
        let judge = self.rollout_judge(&judge_table, path.key("judge"));
        let source = match follow {
            Some(remote) => remote.map(Source::Follow),
            None => self.judge_source(&judge_table, path.key("judge")),
        };
        let state_file = self.source.base_dir().join(&rollout.state_file);
        if let Some(other) = self.names_a_config_file(file, &state_file) {
            self.error(
                path.key("state_file"),
                format!(
                    "{} is {other}: the rollout would overwrite it",
                    state_file.display()
                ),
            );
        }
        match state_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) if !dir.is_dir() => self.error(
                path.key("state_file"),
                format!("the directory {} does not exist", dir.display()),
            ),
            _ if state_file.is_dir() => self.error(
                path.key("state_file"),
                format!("{} is a directory", state_file.display()),
            ),
            _ => {}
        }
        if self.errors.len() != before {
            return None;
        }
        let (index, permille) = rule?;
        let to = &file.rules[index].to;
        let canary = *pools.get(to.as_str())?;
        Some(Some(Plan {
            rule: RuleId(index),
            rule_name: rollout.rule.clone(),
            canary,
            canary_pool: to.clone(),
            canary_version: file.pools[to].version.clone().unwrap_or_default(),
            steps: steps?,
            interval: rollout.interval,
            min_step_duration,
            failure_limit: u32::try_from(failure_limit?).unwrap_or(u32::MAX),
            inconclusive_limit: u32::try_from(inconclusive_limit?).unwrap_or(u32::MAX),
            state_file,
            judge: JudgeSettings {
                min_requests: min_requests? as u64,
                ..judge?
            },
            file_permille: permille,
            source: source?,
        }))
    }

    fn at_most(&mut self, value: Duration, max: Duration, path: KeyPath) {
        if value > max {
            self.error(
                path,
                format!(
                    "must be at most {}, got {}",
                    humantime::format_duration(max),
                    humantime::format_duration(value)
                ),
            );
        }
    }

    /// What `candidate` is, if it is a file this config reads or writes: the config
    /// itself, a whitelist file, the TLS pair or the access log. Compared as the files
    /// they are, not as the paths that are written.
    fn names_a_config_file(
        &self,
        file: &ConfigFile,
        candidate: &std::path::Path,
    ) -> Option<&'static str> {
        let base = self.source.base_dir();
        let mut files: Vec<(std::path::PathBuf, &'static str)> =
            vec![(self.source.path.clone(), "the config file")];
        files.extend(
            file.rules
                .iter()
                .filter_map(|r| r.conditions.whitelist_file.as_ref())
                .map(|f| (base.join(f), "a whitelist file")),
        );
        if let Some(tls) = &file.server.tls {
            files.push((base.join(&tls.cert), "the TLS certificate"));
            files.push((base.join(&tls.key), "the TLS key"));
        }
        if let Some(log) = &file.log.access {
            files.push((base.join(log), "the access log"));
        }
        let candidate = same_file_key(candidate)?;
        files
            .into_iter()
            .find(|(f, _)| same_file_key(f).as_ref() == Some(&candidate))
            .map(|(_, what)| what)
    }

    fn at_least_min_interval(&mut self, value: Duration, path: KeyPath) {
        if value < MIN_INTERVAL {
            self.error(
                path,
                format!(
                    "must be at least {}, got {}",
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(value)
                ),
            );
        }
    }

    /// `source` and the keys that go with it.
    fn judge_source(&mut self, judge: &model::RolloutJudge, path: KeyPath) -> Option<Source> {
        match (judge.source, &judge.prometheus) {
            (JudgeSource::Local, None) => Some(Source::Local),
            (JudgeSource::Local, Some(_)) => {
                self.error(
                    path.key("prometheus"),
                    "only applies with source = \"prometheus\"",
                );
                None
            }
            (JudgeSource::Prometheus, None) => {
                self.error(
                    path.key("prometheus"),
                    "source = \"prometheus\" needs the server's URL, like \"http://prometheus:9090\"",
                );
                None
            }
            (JudgeSource::Prometheus, Some(url)) => {
                if judge.query_timeout.is_zero() {
                    self.error(path.key("query_timeout"), "must be greater than 0");
                }
                self.at_most(judge.query_timeout, MAX_WAIT, path.key("query_timeout"));
                self.at_most(judge.eval_delay, MAX_WAIT, path.key("eval_delay"));
                self.remote(
                    url,
                    path.key("prometheus"),
                    judge.query_timeout,
                    judge.eval_delay,
                )
                .map(Source::Prometheus)
            }
        }
    }

    /// An `http://host[:port][/prefix]` URL.
    fn remote(
        &mut self,
        url: &str,
        path: KeyPath,
        timeout: Duration,
        every: Duration,
    ) -> Option<Remote> {
        let uri: http::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(_) => {
                self.error(path, format!("`{url}` is not a URL like http://host:port"));
                return None;
            }
        };
        let why = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority))
                if uri.query().is_none() && authority.as_str().contains('@') =>
            {
                Some("must not carry credentials")
            }
            (Some("http"), Some(_)) if uri.query().is_some() => {
                Some("must not have a query string")
            }
            (Some("http"), Some(_)) => None,
            (Some("https"), _) => {
                Some("https is not supported: use http:// (on a trusted network)")
            }
            _ => Some("is not a URL like http://host:port"),
        };
        if let Some(why) = why {
            self.error(path, format!("`{url}` {why}"));
            return None;
        }
        let authority = uri.authority().expect("checked above");
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.host()),
        };
        Some(Remote {
            url: url.to_string(),
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            timeout,
            every,
        })
    }

    /// The rule's index and its per-mille in the file. Its canary pool must carry a
    /// `version`: with the rule's name, that is the rollout's identity.
    fn rollout_rule(
        &mut self,
        file: &ConfigFile,
        name: &str,
        path: KeyPath,
    ) -> Option<(usize, u16)> {
        if let Some(why) = control_character(name) {
            self.error(
                path,
                format!("the rule name {name:?} {why}: a rollout's rule is a label value in its metrics and Prometheus queries"),
            );
            return None;
        }
        let Some(index) = file.rules.iter().position(|r| r.name == name) else {
            let names: Vec<&str> = file.rules.iter().map(|r| r.name.as_str()).collect();
            let known = if names.is_empty() {
                "no rules are defined".to_string()
            } else {
                format!("defined rules: {}", names.join(", "))
            };
            self.error(path, format!("unknown rule `{name}`; {known}"));
            return None;
        };
        let rule = &file.rules[index];
        let Some(permille) = rule.conditions.permille else {
            self.error(
                path,
                format!("rule `{name}` has no `permille` condition for the rollout to drive"),
            );
            return None;
        };
        if rule.to == file.routing.stable {
            self.error(
                path,
                format!(
                    "rule `{name}` sends to `{}`, the stable pool; a rollout compares a canary with it",
                    rule.to
                ),
            );
            return None;
        }
        let version_path = || KeyPath::root().key("pools").key(&rule.to).key("version");
        match file.pools.get(&rule.to).map(|p| p.version.as_deref()) {
            Some(None) => {
                self.error(
                    version_path(),
                    format!(
                        "the rollout's canary pool `{}` needs a `version`: the rule and the version are the rollout's identity, and a new version starts a new rollout",
                        rule.to
                    ),
                );
                return None;
            }
            Some(Some(version)) => {
                if let Some(why) = control_character(version) {
                    self.error(
                        version_path(),
                        format!("the rollout's canary version {version:?} {why}: it is a label value in the rollout's metrics and Prometheus queries"),
                    );
                    return None;
                }
            }
            None => {}
        }
        Some((index, permille.clamp(0, 1000) as u16))
    }

    /// The explicit steps, or the schedule's, and the cubic schedule's `every`.
    fn rollout_steps(
        &mut self,
        rollout: &model::Rollout,
        path: &KeyPath,
    ) -> (Option<Vec<u16>>, Option<Duration>) {
        match (&rollout.steps, &rollout.schedule) {
            (Some(steps), None) => (self.explicit_steps(steps, path.key("steps")), None),
            (None, Some(schedule)) => {
                let every = schedule.every;
                let steps = self
                    .schedule(schedule, path.key("schedule"))
                    .map(|s| s.steps());
                if steps.as_ref().is_some_and(|s| s.first() == Some(&1000)) {
                    self.error(path.key("schedule"), FIRST_STEP_AT_1000);
                    return (None, every);
                }
                (steps, every)
            }
            _ => {
                self.error(path.clone(), "give exactly one of `steps` or `schedule`");
                (None, None)
            }
        }
    }

    fn explicit_steps(&mut self, steps: &[i64], path: KeyPath) -> Option<Vec<u16>> {
        if steps.is_empty() {
            self.error(path, "give at least one step");
            return None;
        }
        let before = self.errors.len();
        for (i, &step) in steps.iter().enumerate() {
            if !(1..=1000).contains(&step) {
                let why = if step == 0 {
                    "a step of 0‰ sends the canary nothing to judge".to_string()
                } else {
                    format!("got {step}")
                };
                self.error(path.index(i), format!("must be between 1 and 1000: {why}"));
            } else if i == 0 && step == 1000 {
                self.error(path.index(i), FIRST_STEP_AT_1000);
            } else if i > 0 && step <= steps[i - 1] {
                self.error(
                    path.index(i),
                    format!(
                        "steps must increase: {step} does not exceed the step before it, {}",
                        steps[i - 1]
                    ),
                );
            }
        }
        (self.errors.len() == before).then(|| steps.iter().map(|&s| s as u16).collect())
    }

    fn schedule(&mut self, schedule: &model::Schedule, path: KeyPath) -> Option<Schedule> {
        let before = self.errors.len();
        let needs: &[&str] = match schedule.kind {
            ScheduleKind::Doubling => &["from"],
            ScheduleKind::Linear => &["from", "step"],
            ScheduleKind::Cubic => &["from", "to", "over", "every"],
        };
        let kind = format!("{:?}", schedule.kind).to_lowercase();
        let given = [
            ("from", schedule.from.is_some()),
            ("step", schedule.step.is_some()),
            ("to", schedule.to.is_some()),
            ("over", schedule.over.is_some()),
            ("every", schedule.every.is_some()),
        ];
        for (key, present) in given {
            match (needs.contains(&key), present) {
                (true, false) => {
                    self.error(path.clone(), format!("a {kind} schedule needs `{key}`"))
                }
                (false, true) => self.error(
                    path.key(key),
                    format!("`{key}` does not apply to a {kind} schedule"),
                ),
                _ => {}
            }
        }
        let mut permille = |key: &str, value: Option<i64>, low: i64| -> u16 {
            match value {
                Some(v) if (low..=1000).contains(&v) => v as u16,
                Some(v) => {
                    self.error(
                        path.key(key),
                        format!("must be between {low} and 1000, got {v}"),
                    );
                    0
                }
                None => 0,
            }
        };
        let result = match schedule.kind {
            ScheduleKind::Doubling => Schedule::Doubling {
                from: permille("from", schedule.from, 1),
            },
            ScheduleKind::Linear => Schedule::Linear {
                from: permille("from", schedule.from, 1),
                step: permille("step", schedule.step, 1),
            },
            ScheduleKind::Cubic => {
                let from = permille("from", schedule.from, 0);
                let to = permille("to", schedule.to, 1);
                let (over, every) = (
                    schedule.over.unwrap_or_default(),
                    schedule.every.unwrap_or_default(),
                );
                if schedule.from.is_some() && schedule.to.is_some() && to <= from {
                    self.error(
                        path.key("to"),
                        format!("must exceed `from` ({from}), got {to}"),
                    );
                }
                for (key, value) in [("over", schedule.over), ("every", schedule.every)] {
                    if value.is_some_and(|v| v.is_zero()) {
                        self.error(path.key(key), "must be greater than 0");
                    }
                    if let Some(value) = value {
                        self.at_most(value, MAX_RAMP, path.key(key));
                    }
                }
                if !over.is_zero() && !every.is_zero() {
                    if every > over {
                        self.error(
                            path.key("every"),
                            format!(
                                "{} exceeds `over` ({}): the ramp would have no steps",
                                humantime::format_duration(every),
                                humantime::format_duration(over)
                            ),
                        );
                    } else if over.as_nanos() / every.as_nanos() > MAX_SAMPLES {
                        self.error(
                            path.key("every"),
                            format!("samples the ramp more than {MAX_SAMPLES} times"),
                        );
                    }
                }
                Schedule::Cubic {
                    from,
                    to,
                    over,
                    every,
                }
            }
        };
        (self.errors.len() == before).then_some(result)
    }

    fn rollout_judge(
        &mut self,
        judge: &model::RolloutJudge,
        path: KeyPath,
    ) -> Option<JudgeSettings> {
        let before = self.errors.len();
        if !(judge.alpha > 0.0 && judge.alpha < 0.5) {
            self.error(
                path.key("alpha"),
                format!(
                    "must be between 0 and 0.5, both excluded, got {}",
                    judge.alpha
                ),
            );
        }
        if !(judge.max_error_rate > 0.0 && judge.max_error_rate <= 1.0) {
            self.error(
                path.key("max_error_rate"),
                format!(
                    "must be above 0 and at most 1, got {}",
                    judge.max_error_rate
                ),
            );
        }
        if !(0.0..1.0).contains(&judge.error_margin) {
            self.error(
                path.key("error_margin"),
                format!("must be at least 0 and below 1, got {}", judge.error_margin),
            );
        }
        if !(0.0..=10.0).contains(&judge.latency_margin) {
            self.error(
                path.key("latency_margin"),
                format!(
                    "must be between 0 and 10 (1000 %), got {}",
                    judge.latency_margin
                ),
            );
        }
        if judge.max_p99.is_zero() {
            self.error(path.key("max_p99"), "must be greater than 0");
        }
        (self.errors.len() == before).then_some(JudgeSettings {
            alpha: judge.alpha,
            max_error_rate: judge.max_error_rate,
            max_p99: judge.max_p99,
            error_margin: judge.error_margin,
            latency_margin: judge.latency_margin,
            min_requests: 1,
        })
    }

    fn at_least_one(&mut self, value: i64, path: KeyPath) -> Option<i64> {
        if value < 1 {
            self.error(path, format!("must be at least 1, got {value}"));
            return None;
        }
        Some(value)
    }
}

/// Whether `text` has a control character (a newline, a tab...), in words. A label
/// value with one breaks every PromQL query that names it.
fn control_character(text: &str) -> Option<String> {
    let c = text.chars().find(|c| c.is_control())?;
    Some(format!(
        "has the control character U+{:04X} ({c:?})",
        u32::from(c)
    ))
}

const FIRST_STEP_AT_1000: &str = "the first step must be below 1000‰: at 1000‰ no control is left to judge the canary against (to send everyone, set the rule's `permille`)";

/// A path as the file it names: its directory resolved (symlinks, `..`) and its name,
/// so two spellings of one file compare equal whether or not it exists yet.
fn same_file_key(path: &std::path::Path) -> Option<std::path::PathBuf> {
    if let Ok(resolved) = std::fs::canonicalize(path) {
        return Some(resolved);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
}

#[cfg(test)]
mod tests {
    use crate::config::{self, Source};
    use crate::shared::Shared;

    /// `graygate check`'s errors for a config with a canary at `version` and a
    /// per-mille rule named `rule` that the rollout drives; empty when it is valid.
    fn errors(rule: &str, version: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[pools.blue]
endpoints = ["127.0.0.1:1"]
[pools.canary]
endpoints = ["127.0.0.1:2"]
version = "{version}"
[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}
[[rules]]
name = "{rule}"
match = {{ permille = 0 }}
to = "canary"
[rollout]
rule = "{rule}"
steps = [100]
"#
        );
        let source = Source {
            path: dir.path().join("g.toml"),
            text,
        };
        let file = config::parse(&source).unwrap();
        match config::compile(file, &source, &Shared::new()) {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn control_characters_in_the_rollouts_rule_or_version_are_refused_with_their_keys() {
        assert_eq!(errors("canary-rollout", "v2 rc.1"), "");
        // TOML escapes: the values hold a real newline, tab, DEL.
        let version = errors("canary-rollout", r"v2\n");
        assert!(
            version.contains(": pools.canary.version: the rollout's canary version \"v2\\n\" has the control character U+000A ('\\n')"),
            "{version}"
        );
        let version = errors("canary-rollout", r"v2\u007f");
        assert!(version.contains("U+007F"), "{version}");
        let rule = errors(r"canary\trollout", "v2");
        assert!(
            rule.contains(": rollout.rule: the rule name \"canary\\trollout\" has the control character U+0009 ('\\t')"),
            "{rule}"
        );
    }
}
