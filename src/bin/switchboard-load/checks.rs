//! PASS/FAIL verdicts of the soak modes: each check prints one line
//! `CHECK <name> PASS|FAIL <detail>` (what `scripts/soak` gathers into its
//! summary), and the run fails if any check failed.

use std::fmt::Display;

use anyhow::bail;

/// The checks of one run, in the order they were made.
#[derive(Debug, Default)]
pub struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// Records and prints one check.
    pub fn check(&mut self, name: &str, pass: bool, detail: impl Display) {
        let verdict = if pass { "PASS" } else { "FAIL" };
        println!("CHECK {name} {verdict} {detail}");
        if !pass {
            self.failed.push(name.to_owned());
        }
    }

    /// Whether every check so far passed.
    pub fn all_passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// `Ok` when every check passed, else an error naming the failed ones.
    pub fn finish(self) -> anyhow::Result<()> {
        if !self.failed.is_empty() {
            bail!("failed checks: {}", self.failed.join(", "));
        }
        Ok(())
    }
}
