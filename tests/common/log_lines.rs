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

    /// Waits (bounded like [`LogLines::wait_line`]) until `count` lines
    /// containing `needle` have been seen; returns the last.
    pub fn wait_count(&mut self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + self.wait;
        loop {
            let matching: Vec<&String> = self.seen.iter().filter(|l| l.contains(needle)).collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "fewer than {count} log lines containing {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// Every line seen so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}
