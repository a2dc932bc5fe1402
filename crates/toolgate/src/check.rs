//! `toolgate check`: validate policy files, or a configuration and the policies it names.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::BAD_CONFIG;

/// Checks everything given; prints every problem as `file:line:column: pointer: message`.
pub fn run(config: Option<PathBuf>, policies: &[PathBuf]) -> ExitCode {
    let mut files: Vec<PathBuf> = policies.to_vec();
    let mut ok = true;
    let config = config.or_else(|| policies.is_empty().then(|| "toolgate.toml".into()));
    if let Some(path) = config {
        match crate::load(&path) {
            Some(c) => {
                println!(
                    "{}: ok ({} servers, {} grants)",
                    path.display(),
                    c.servers.len(),
                    c.grants.len()
                );
                for g in &c.grants {
                    match &g.policy {
                        Some(p) if !files.contains(p) => files.push(p.clone()),
                        Some(_) => {}
                        None => println!(
                            "{}: grant {:?} has no policy: it is denied every call",
                            path.display(),
                            g.name
                        ),
                    }
                }
            }
            None => ok = false,
        }
    }
    for file in &files {
        ok &= check_policy(file);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(BAD_CONFIG)
    }
}

fn check_policy(path: &Path) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", path.display());
            return false;
        }
    };
    match toolgate_policy::parse(&text) {
        Ok(policy) => {
            println!(
                "{}: ok (version {}, {} tool entries)",
                path.display(),
                policy.version,
                policy.len()
            );
            true
        }
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{}:{d}", path.display());
            }
            eprintln!(
                "{}: {} problem(s); the policy was not accepted",
                path.display(),
                e.diagnostics.len()
            );
            false
        }
    }
}
