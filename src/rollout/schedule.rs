//! Weight schedules, each compiled to the explicit per-mille list that `check`,
//! `explain` and `/admin/rollout` show.
//!
//! - `doubling` from N: N, 2N, 4N, ... then 1000 (seed 004's 1-2-4-8 batches);
//! - `linear` from N by S: N, N + S, N + 2S, ... then 1000;
//! - `cubic` from W0 to W1 over T, sampled every E: the smooth ramp of seed 001,
//!   `w(t) = W0 + 3(W1 - W0)t²/T² - 2(W1 - W0)t³/T³`, at t = 0, E, 2E, ... T, rounded
//!   to whole per-mille. Steps at 0‰ carry no canary traffic to judge and are left out,
//!   as are repeats where the curve is flat.

use std::time::Duration;

/// A schedule, as validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Doubling {
        from: u16,
    },
    Linear {
        from: u16,
        step: u16,
    },
    Cubic {
        from: u16,
        to: u16,
        over: Duration,
        every: Duration,
    },
}

/// More samples than this is a mistake (a whole day sampled every second).
pub const MAX_SAMPLES: u128 = 10_000;

impl Schedule {
    /// The steps, strictly increasing, each in 1..=1000.
    pub fn steps(&self) -> Vec<u16> {
        let mut steps = Vec::new();
        match *self {
            Schedule::Doubling { from } => {
                let mut w = u32::from(from.max(1));
                while w < 1000 {
                    steps.push(w as u16);
                    w *= 2;
                }
            }
            Schedule::Linear { from, step } => {
                let mut w = u32::from(from.max(1));
                while w < 1000 {
                    steps.push(w as u16);
                    w += u32::from(step.max(1));
                }
            }
            Schedule::Cubic {
                from,
                to,
                over,
                every,
            } => {
                let (t_end, e) = (over.as_secs_f64(), every.as_secs_f64());
                let samples = (over.as_nanos() / every.as_nanos().max(1)).min(MAX_SAMPLES) as u32;
                let mut times: Vec<f64> = (0..=samples).map(|k| f64::from(k) * e).collect();
                if times.last().is_some_and(|&t| t < t_end) {
                    times.push(t_end);
                }
                for t in times {
                    steps.push(cubic(from, to, t, t_end));
                }
            }
        }
        if !matches!(self, Schedule::Cubic { to, .. } if *to < 1000) {
            steps.push(1000);
        }
        steps.retain(|&w| w > 0);
        steps.dedup();
        steps
    }
}

/// Seed 001's cubic ramp at time `t` of `t_end`, in whole per-mille.
fn cubic(from: u16, to: u16, t: f64, t_end: f64) -> u16 {
    let (w0, w1) = (f64::from(from), f64::from(to));
    let x = (t / t_end).clamp(0.0, 1.0);
    let w = w0 + 3.0 * (w1 - w0) * x * x - 2.0 * (w1 - w0) * x * x * x;
    w.round().clamp(0.0, 1000.0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_reproduces_seed_004s_batches_then_everyone() {
        assert_eq!(
            Schedule::Doubling { from: 1 }.steps(),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
        );
        assert_eq!(Schedule::Doubling { from: 300 }.steps(), [300, 600, 1000]);
        assert_eq!(Schedule::Doubling { from: 1000 }.steps(), [1000]);
    }

    #[test]
    fn linear_steps_evenly_then_everyone() {
        assert_eq!(
            Schedule::Linear { from: 50, step: 50 }.steps().len(),
            20,
            "50, 100, ... 950, 1000"
        );
        assert_eq!(
            Schedule::Linear {
                from: 100,
                step: 300
            }
            .steps(),
            [100, 400, 700, 1000]
        );
    }

    #[test]
    fn cubic_follows_the_smooth_ramp() {
        let steps = Schedule::Cubic {
            from: 0,
            to: 1000,
            over: Duration::from_secs(7200),
            every: Duration::from_secs(600),
        }
        .steps();
        // t = 0 gives 0 (left out); t = 10 min: 1000 (3/144 - 2/1728) = 19.7.
        assert_eq!(steps.first(), Some(&20));
        assert_eq!(steps.last(), Some(&1000));
        assert_eq!(steps.len(), 12);
        assert_eq!(steps[5], 500, "the midpoint of the ramp is half way");
        assert!(steps.windows(2).all(|w| w[0] < w[1]));
        // Steepest in the middle, flat at both ends.
        let gaps: Vec<u16> = steps.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] < gaps[5] && gaps[10] < gaps[5], "{gaps:?}");
    }

    #[test]
    fn a_cubic_ramp_to_less_than_everyone_ends_there() {
        let steps = Schedule::Cubic {
            from: 10,
            to: 100,
            over: Duration::from_secs(100),
            every: Duration::from_secs(30),
        }
        .steps();
        assert_eq!(steps.first(), Some(&10));
        assert_eq!(steps.last(), Some(&100), "{steps:?}");
    }
}
