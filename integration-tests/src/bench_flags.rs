//! What the bench binaries share about their flags: every bad value is collected and reported at once, then the
//! bench exits with status 2 (no backtrace), as the master's and agent's flags are checked.

/// Flag errors collected while validating, one line each (`--agents: 'x' is not a count`).
#[derive(Debug, Default)]
pub struct FlagErrors(pub Vec<String>);

impl FlagErrors {
    /// `text` as a count of at least `min`, or an error line for `flag`.
    pub fn count(&mut self, flag: &str, text: &str, min: usize) -> usize {
        match text.trim().parse::<usize>() {
            Ok(n) if n >= min => n,
            _ => {
                self.0.push(format!("{flag}: '{text}' is not a count of at least {min}"));
                min
            }
        }
    }

    /// `text` as a Mesos duration (`5secs`, `500ms`), kept as given for the processes it is passed to.
    pub fn duration(&mut self, flag: &str, text: &str) -> String {
        if let Err(e) = agora_proto::model::parse_duration(text) {
            self.0.push(format!("{flag}: {e}"));
        }
        text.to_string()
    }

    /// Prints every error prefixed with the bench's `name` and exits with status 2, if there is any.
    pub fn exit_if_any(self, name: &str) {
        if self.0.is_empty() {
            return;
        }
        for e in &self.0 {
            eprintln!("{name}: {e}");
        }
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_collected() {
        let mut errors = FlagErrors::default();
        assert_eq!(errors.count("--agents", "12", 1), 12);
        errors.count("--agents", "x", 1);
        errors.count("--rounds", "0", 1);
        errors.duration("--zk-session-timeout", "soon");
        assert_eq!(errors.duration("--zk-session-timeout", "5secs"), "5secs");
        assert_eq!(errors.0.len(), 3, "{:?}", errors.0);
        assert_eq!(errors.0[0], "--agents: 'x' is not a count of at least 1");
        assert!(errors.0[2].starts_with("--zk-session-timeout: "), "{:?}", errors.0);
    }
}
