//! `agora-container-monitor <container checkpoint dir>`: starts one task's container and reaps it, outliving the
//! agent that started it. See `agora_agent::monitor`.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: agora-container-monitor <container checkpoint dir>");
        std::process::exit(2);
    };
    std::process::exit(agora_agent::monitor::run(std::path::Path::new(&dir)));
}
