//! The catalog against the real tool lists of the reference servers (installed by
//! `scripts/setup-test-deps.sh`) and of ssh-mcp: a snapshot of every classification, the
//! built-in entries checked against what the servers really offer, and `recommend` output
//! that `check` accepts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A missing prerequisite fails loudly, with the command that installs it.
fn require(path: &Path) -> String {
    assert!(
        path.exists(),
        "missing {}: run `bash scripts/setup-test-deps.sh` (and `cargo build --workspace`) first",
        path.display()
    );
    path.display().to_string()
}

fn toolgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("TOOLGATE_LOG", "warn")
        .output()
        .expect("toolgate runs")
}

/// A configuration with the five reference servers and ssh-mcp, in a fresh directory.
fn config(dir: &Path, catalog: &str) -> PathBuf {
    let root = root();
    let node = root.join("node_modules/.bin");
    let venv = root.join(".venv/bin");
    let ssh_mcp = Path::new(env!("CARGO_BIN_EXE_toolgate")).with_file_name("ssh-mcp");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let servers = [
        (
            "everything",
            require(&node.join("mcp-server-everything")),
            vec![],
        ),
        (
            "filesystem",
            require(&node.join("mcp-server-filesystem")),
            vec![files.display().to_string()],
        ),
        ("git", require(&venv.join("mcp-server-git")), vec![]),
        ("fetch", require(&venv.join("mcp-server-fetch")), vec![]),
        ("time", require(&venv.join("mcp-server-time")), vec![]),
        ("ssh", require(&ssh_mcp), vec![]),
    ];
    let mut text = format!("[state]\ndir = \"state\"\n[catalog]\n{catalog}\n");
    for (name, command, args) in servers {
        text.push_str(&format!(
            "[servers.{name}]\ncommand = {}\nargs = {}\nenv = {{ RUST_LOG = \"warn\" }}\n",
            json!(command),
            json!(args)
        ));
    }
    let path = dir.join("toolgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toolgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn reference_servers_are_classified_as_recorded_and_match_the_built_in_catalog() {
    let dir = tempdir("reference-inventory");
    let report = inventory(&config(&dir, ""));
    let known = toolgate_catalog::builtin();
    for server in report["servers"].as_array().unwrap() {
        let name = server["name"].as_str().unwrap();
        let tools = server["tools"].as_array().unwrap();
        assert!(!tools.is_empty(), "server {name} listed no tools: {server}");
        // Every built-in entry names exactly the tools the real server lists.
        let info_name = server["serverInfo"]["name"].as_str().unwrap();
        let entry = known
            .iter()
            .find(|k| k.server_info_name == info_name)
            .unwrap_or_else(|| panic!("no built-in entry for serverInfo.name {info_name:?}"));
        let real: BTreeSet<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        let catalogued: BTreeSet<&str> = entry.tools.keys().map(String::as_str).collect();
        assert_eq!(
            real, catalogued,
            "data file for {info_name} is out of date with the real server"
        );
    }
    let snapshot = classifications(&report);
    assert_eq!(snapshot.as_object().unwrap().len(), 6);
    insta::assert_json_snapshot!("reference_servers", snapshot);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `{server: [{name, categories, severity, evidence: ["source: detail"], findings}]}`.
fn classifications(report: &Value) -> Value {
    let mut snapshot = serde_json::Map::new();
    for server in report["servers"].as_array().unwrap() {
        let classified: Vec<Value> = server["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                json!({
                    "name": t["name"],
                    "categories": t["categories"],
                    "severity": t["severity"],
                    "evidence": t["evidence"].as_array().unwrap().iter()
                        .map(|e| format!("{}: {}", e["source"].as_str().unwrap(), e["detail"].as_str().unwrap()))
                        .collect::<Vec<_>>(),
                    "findings": t["findings"],
                })
            })
            .collect();
        snapshot.insert(
            server["name"].as_str().unwrap().to_owned(),
            Value::Array(classified),
        );
    }
    Value::Object(snapshot)
}

fn inventory(config: &Path) -> Value {
    let out = toolgate(&["inventory", "--json", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inventory failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("inventory --json prints JSON")
}

/// The heuristics alone (as for a server the catalog does not know), on real tools: the
/// record of what names, descriptions, argument shapes and annotations say.
#[test]
fn reference_servers_classified_by_heuristics_alone() {
    let dir = tempdir("reference-heuristics");
    let report = inventory(&config(&dir, "builtin_entries = false"));
    let snapshot = classifications(&report);
    // No built-in entry was used, and no real server's text looks poisoned.
    for (server, tools) in snapshot.as_object().unwrap() {
        for t in tools.as_array().unwrap() {
            let evidence = t["evidence"].to_string();
            assert!(!evidence.contains("known: "), "{server}: {t}");
            assert_eq!(t["findings"], json!([]), "{server}: {t}");
        }
    }
    insta::assert_json_snapshot!("reference_servers_heuristics", snapshot);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn recommended_policies_pass_check_for_every_reference_server() {
    let dir = tempdir("reference-recommend");
    let config = config(&dir, "");
    for server in ["everything", "filesystem", "git", "fetch", "time", "ssh"] {
        let out = toolgate(&[
            "recommend",
            "--config",
            config.to_str().unwrap(),
            "--server",
            server,
        ]);
        assert!(
            out.status.success(),
            "recommend --server {server} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let policy: Value = serde_json::from_slice(&out.stdout).expect("recommend prints JSON");
        assert_eq!(policy["default"], "deny");
        let file = dir.join(format!("{server}.json"));
        std::fs::write(&file, &out.stdout).unwrap();
        let check = toolgate(&["check", file.to_str().unwrap()]);
        assert!(
            check.status.success(),
            "check rejected the recommendation for {server}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // Every tool the server lists has its own entry.
        let entries = policy["tools"].as_object().unwrap();
        assert!(entries.keys().all(|k| k.starts_with(&format!("{server}/"))));
        assert!(!entries.is_empty());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
