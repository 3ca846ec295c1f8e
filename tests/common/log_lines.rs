//! A child process's stderr, read line by line on a thread, so tests can wait
//! (bounded) for a log line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The stderr lines of one child process.
pub struct LogLines {
    lines: Receiver<String>,
    seen: Vec<String>,
    wait: Duration,
}

impl LogLines {
    /// Takes `child`'s piped stderr and starts reading it; `wait_line` waits
    /// at most `wait`.
    pub fn follow(child: &mut Child, wait: Duration) -> LogLines {
        let stderr = child.stderr.take().expect("stderr must be piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogLines {
            lines,
            seen: Vec::new(),
            wait,
        }
    }

    /// Waits (at most the `wait` given to `follow`) for a line containing `needle` and returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + self.wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line containing {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// Every line seen so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}
