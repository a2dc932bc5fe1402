//! Real Redis and PostgreSQL servers for the backend tests: the ones named by
//! `TOOLGATE_TEST_REDIS` / `TOOLGATE_TEST_POSTGRES` (the test command starts them), or else
//! private ones started by `scripts/services.sh` for this test process. A missing server
//! program fails the test loudly; nothing is skipped.

use std::process::Command;
use std::sync::OnceLock;

/// Where the test servers listen.
pub struct Services {
    /// A Redis URL.
    pub redis: String,
    /// A PostgreSQL URL of a database the tests may create databases beside.
    pub postgres: String,
}

/// The servers, started once per test process when the environment names none.
pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        if let (Ok(redis), Ok(postgres)) = (
            std::env::var("TOOLGATE_TEST_REDIS"),
            std::env::var("TOOLGATE_TEST_POSTGRES"),
        ) {
            return Services { redis, postgres };
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");
        let dir = std::env::temp_dir().join(format!("toolgate-services-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .expect("run scripts/services.sh");
        assert!(
            out.status.success(),
            "cannot start the test Redis and PostgreSQL (scripts/services.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/services.sh printed no {name}: {text}"))
                .to_owned()
        };
        Services {
            redis: var("TOOLGATE_TEST_REDIS"),
            postgres: var("TOOLGATE_TEST_POSTGRES"),
        }
    })
}
