//! Logging setup of every Agora binary: `tracing` events to stderr, filtered by `RUST_LOG` or a default.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sends `tracing` events to stderr (in colour only on a terminal), filtered by `RUST_LOG` when it is set and
/// valid, else by `default_filter` (an `EnvFilter` directive such as `"info"` or `"warn,agora_master=info"`).
/// Does nothing when a subscriber is already installed (a second call, a test harness's), so it never panics.
pub fn init_tracing(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_call_is_harmless() {
        super::init_tracing("info");
        super::init_tracing("debug");
        tracing::info!("logged once the subscriber is set");
    }
}
