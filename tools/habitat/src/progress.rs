//! Progress on stderr for the commands people wait on: an indicatif bar or spinner when
//! stderr is a terminal, plain lines otherwise (logs, CI, pipes) — at most one every few
//! seconds, and one when the work ends.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain form prints a line while the count moves.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// One piece of work: counted (`of` a total, in `unit`s) or open-ended.
pub struct Progress {
    what: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    printed: Instant,
}

impl Progress {
    /// Counted work: `done` of `total` `unit`s.
    pub fn counted(what: &str, total: u64, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, {{eta}} left)"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(what.to_owned());
            bar
        });
        Self::with(what, unit, Some(total), bar)
    }

    /// Open-ended work (waiting for something): a spinner, or a line when it ends.
    pub fn waiting(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self::with(what, "", None, bar)
    }

    fn with(what: &str, unit: &'static str, total: Option<u64>, bar: Option<ProgressBar>) -> Self {
        let now = Instant::now();
        Self {
            what: what.to_owned(),
            unit,
            total,
            done: 0,
            bar,
            started: now,
            printed: now,
        }
    }

    /// `done` units so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.printed.elapsed() >= PLAIN_EVERY => {
                self.printed = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    /// One more unit done.
    pub fn inc(&mut self) {
        self.set(self.done + 1);
    }

    /// The plain line of where the work stands.
    fn line(&self) -> String {
        match self.total {
            Some(total) => format!("{}: {} of {total} {}", self.what, self.done, self.unit),
            None => self.what.clone(),
        }
    }

    /// Ends the work with `outcome` (`ready`, `done`…) and the time it took.
    pub fn finish(self, outcome: &str) {
        let took = self.started.elapsed().as_secs_f64();
        let line = match self.total {
            Some(_) => format!("{} {outcome} in {took:.1} s", self.line()),
            None => format!("{} {outcome} in {took:.1} s", self.what),
        };
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
    }
}
