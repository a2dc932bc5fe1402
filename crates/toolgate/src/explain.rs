//! `toolgate explain`: what a grant's policy decides for one call, and why.

use std::process::ExitCode;

use serde_json::{Value, json};
use toolgate_gateway::Config;
use toolgate_gateway::guard::load_policy;
use toolgate_gateway::manage::{explain, resolve_tool};
use toolgate_gateway::stores::{Purpose, Stores};

use crate::BAD_CONFIG;

/// Explains one call; exit 0 whatever the decision, 2 on bad input.
pub async fn run(
    config: &Config,
    grant: &str,
    tool: &str,
    server: Option<&str>,
    args: &str,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let bad = |message: String| {
        eprintln!("toolgate explain: {message}");
        Ok(ExitCode::from(BAD_CONFIG))
    };
    let Some(g) = config.grants.iter().find(|g| g.name == grant) else {
        return bad(format!("no grant named {grant:?}"));
    };
    let (server, tool) = match (tool.contains('/'), server) {
        (false, Some(s)) => (s.to_owned(), tool.to_owned()),
        _ => match resolve_tool(config, tool) {
            Ok(found) => found,
            Err(e) => return bad(e),
        },
    };
    if config.server(&server).is_none() {
        return bad(format!("no server named {server:?} in the configuration"));
    }
    let args: Value = match serde_json::from_str(args) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("--args must be a JSON object".into()),
        Err(e) => return bad(format!("--args is not JSON: {e}")),
    };
    let Some(policy_path) = &g.policy else {
        let out = json!({"decision": "hidden", "rule": toolgate_policy::RULE_NO_POLICY,
            "message": "this grant has no policy: every call is refused"});
        print_out(&out, as_json);
        return Ok(ExitCode::SUCCESS);
    };
    let policy = match load_policy(policy_path) {
        Ok((p, _)) => p,
        Err(e) => return bad(format!("{}: {e}", policy_path.display())),
    };
    let stores = Stores::open(config, Purpose::Command).await?;
    let mut out = explain(config, &stores, grant, &policy, &server, &tool, &args).await?;
    out["policy"] = json!(policy_path.display().to_string());
    print_out(&out, as_json);
    Ok(ExitCode::SUCCESS)
}

/// Prints the explanation; a closed stdout (`| head`) ends the output quietly.
fn print_out(out: &Value, as_json: bool) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut o = String::new();
    // Writing to a String cannot fail.
    macro_rules! line {
        ($($arg:tt)*) => {
            let _ = writeln!(o, $($arg)*);
        };
    }
    if as_json {
        line!("{out:#}");
        let _ = std::io::stdout().write_all(o.as_bytes());
        return;
    }
    let s = |k: &str| out[k].as_str().unwrap_or_default().to_owned();
    line!("decision: {}", s("decision"));
    line!("rule:     {}", s("rule"));
    if !s("message").is_empty() {
        line!("message:  {}", s("message"));
    }
    if out.get("policy").is_some() {
        line!("policy:   {} ({})", s("policy"), s("policy_version"));
        line!("call:     {}/{}", s("server"), s("tool"));
    }
    if let Some(fired) = out["fired"].as_array().filter(|f| !f.is_empty()) {
        line!("rules that fired:");
        for f in fired {
            line!(
                "  {}  {}",
                f["rule"].as_str().unwrap_or_default(),
                f["effect"].as_str().unwrap_or_default()
            );
        }
    }
    if let Some(counters) = out["counters"].as_array().filter(|c| !c.is_empty()) {
        line!("counters ({}):", s("counter_store"));
        for c in counters {
            line!(
                "  {} ({}): {} of {} used per {}; this call takes {}{}; window resets at {}",
                c["counter"].as_str().unwrap_or_default(),
                c["key"].as_str().unwrap_or_default(),
                c["used"],
                c["max"],
                c["window"].as_str().unwrap_or_default(),
                c["takes"],
                if c["would_exceed"] == true {
                    " and would exceed it"
                } else {
                    ""
                },
                c["resets_at"].as_str().unwrap_or_default(),
            );
        }
    }
    let _ = std::io::stdout().write_all(o.as_bytes());
}
