//! Classification: built-in entries for known servers, the operator's overrides, and
//! heuristics over names, descriptions, argument shapes and annotations.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::class::{Category, Classification, Evidence, Finding, FindingKind, Severity, Source};
use crate::scan;
use crate::tool::ToolDef;

/// Name words and the category each implies. Matched against whole words of the tool's
/// name (split at `_`, `-`, `.`, `/`, spaces and lowerCamel humps).
const NAME_WORDS: &[(&str, Category)] = &[
    // execute
    ("exec", Category::Execute),
    ("execute", Category::Execute),
    ("run", Category::Execute),
    ("shell", Category::Execute),
    ("command", Category::Execute),
    ("cmd", Category::Execute),
    ("eval", Category::Execute),
    ("evaluate", Category::Execute),
    ("script", Category::Execute),
    ("terminal", Category::Execute),
    ("spawn", Category::Execute),
    ("bash", Category::Execute),
    ("powershell", Category::Execute),
    ("python", Category::Execute),
    ("sudo", Category::Execute),
    ("invoke", Category::Execute),
    ("sql", Category::Execute),
    // destructive
    ("delete", Category::Destructive),
    ("remove", Category::Destructive),
    ("rm", Category::Destructive),
    ("rmdir", Category::Destructive),
    ("unlink", Category::Destructive),
    ("drop", Category::Destructive),
    ("destroy", Category::Destructive),
    ("kill", Category::Destructive),
    ("terminate", Category::Destructive),
    ("truncate", Category::Destructive),
    ("wipe", Category::Destructive),
    ("purge", Category::Destructive),
    ("erase", Category::Destructive),
    ("reset", Category::Destructive),
    ("revoke", Category::Destructive),
    ("uninstall", Category::Destructive),
    ("overwrite", Category::Destructive),
    ("shutdown", Category::Destructive),
    ("reboot", Category::Destructive),
    // write
    ("create", Category::Write),
    ("write", Category::Write),
    ("update", Category::Write),
    ("edit", Category::Write),
    ("set", Category::Write),
    ("add", Category::Write),
    ("insert", Category::Write),
    ("put", Category::Write),
    ("post", Category::Write),
    ("upload", Category::Write),
    ("save", Category::Write),
    ("move", Category::Write),
    ("rename", Category::Write),
    ("commit", Category::Write),
    ("push", Category::Write),
    ("modify", Category::Write),
    ("patch", Category::Write),
    ("append", Category::Write),
    ("merge", Category::Write),
    ("checkout", Category::Write),
    ("apply", Category::Write),
    ("install", Category::Write),
    ("copy", Category::Write),
    ("mkdir", Category::Write),
    ("send", Category::Write),
    ("publish", Category::Write),
    ("toggle", Category::Write),
    ("enable", Category::Write),
    ("disable", Category::Write),
    ("replace", Category::Write),
    ("assign", Category::Write),
    ("import", Category::Write),
    ("deploy", Category::Write),
    ("start", Category::Write),
    ("stop", Category::Write),
    ("resize", Category::Write),
    ("schedule", Category::Write),
    // network
    ("fetch", Category::Network),
    ("http", Category::Network),
    ("https", Category::Network),
    ("url", Category::Network),
    ("request", Category::Network),
    ("download", Category::Network),
    ("curl", Category::Network),
    ("wget", Category::Network),
    ("browse", Category::Network),
    ("browser", Category::Network),
    ("navigate", Category::Network),
    ("web", Category::Network),
    ("webhook", Category::Network),
    ("email", Category::Network),
    ("mail", Category::Network),
    ("sms", Category::Network),
    ("tunnel", Category::Network),
    ("ssh", Category::Network),
    ("scp", Category::Network),
    ("rsync", Category::Network),
    ("socket", Category::Network),
    ("proxy", Category::Network),
    // financial
    ("pay", Category::Financial),
    ("payment", Category::Financial),
    ("payout", Category::Financial),
    ("transfer", Category::Financial),
    ("invoice", Category::Financial),
    ("charge", Category::Financial),
    ("refund", Category::Financial),
    ("purchase", Category::Financial),
    ("buy", Category::Financial),
    ("sell", Category::Financial),
    ("wallet", Category::Financial),
    ("transaction", Category::Financial),
    ("bank", Category::Financial),
    ("billing", Category::Financial),
    ("withdraw", Category::Financial),
    ("deposit", Category::Financial),
    ("trade", Category::Financial),
    // credential access
    ("credential", Category::CredentialAccess),
    ("credentials", Category::CredentialAccess),
    ("secret", Category::CredentialAccess),
    ("secrets", Category::CredentialAccess),
    ("password", Category::CredentialAccess),
    ("passwords", Category::CredentialAccess),
    ("token", Category::CredentialAccess),
    ("tokens", Category::CredentialAccess),
    ("apikey", Category::CredentialAccess),
    ("env", Category::CredentialAccess),
    ("environment", Category::CredentialAccess),
    ("keychain", Category::CredentialAccess),
    ("vault", Category::CredentialAccess),
    ("oauth", Category::CredentialAccess),
    ("cookie", Category::CredentialAccess),
    ("cookies", Category::CredentialAccess),
    // read
    ("get", Category::Read),
    ("list", Category::Read),
    ("read", Category::Read),
    ("search", Category::Read),
    ("show", Category::Read),
    ("describe", Category::Read),
    ("view", Category::Read),
    ("query", Category::Read),
    ("status", Category::Read),
    ("log", Category::Read),
    ("logs", Category::Read),
    ("diff", Category::Read),
    ("find", Category::Read),
    ("info", Category::Read),
    ("lookup", Category::Read),
    ("count", Category::Read),
    ("check", Category::Read),
    ("inspect", Category::Read),
    ("tree", Category::Read),
    ("stat", Category::Read),
    ("echo", Category::Read),
    ("convert", Category::Read),
    ("calculate", Category::Read),
    ("compute", Category::Read),
    ("validate", Category::Read),
    ("parse", Category::Read),
    ("render", Category::Read),
];

/// Description phrases (regexes over the lowercased description) and their categories.
/// Only strong phrases: descriptions are long and mention much.
const DESCRIPTION_PHRASES: &[(&str, Category)] = &[
    (
        r"\b(execut\w*|run\w*|evaluat\w*)\s+(a |an |any |arbitrary |the )?(shell |bash |system |terminal )?(commands?|code|scripts?|programs?)\b",
        Category::Execute,
    ),
    (
        r"\bshell commands?\b|\barbitrary code\b|\binteractive (shell|session|terminal)s?\b",
        Category::Execute,
    ),
    (
        r"\b(permanently|irreversibl\w*|cannot be undone|overwrites?)\b",
        Category::Destructive,
    ),
    (r"\bdelet\w+\b", Category::Destructive),
    (
        r"\bhttp requests?\b|\bfrom the internet\b|\bweb pages?\b|\bsends? (an )?e-?mails?\b",
        Category::Network,
    ),
    (
        r"\benvironment variables\b|\bapi keys?\b|\bpasswords?\b|\bsecrets?\b|\baccess tokens?\b",
        Category::CredentialAccess,
    ),
    (
        r"\bpayments?\b|\btransfers? (money|funds)\b|\binvoices?\b|\bcharges? (a |the )?(card|customer)\b",
        Category::Financial,
    ),
];

/// Argument names whose string value says what the tool does.
const ARGUMENT_SHAPES: &[(&str, Category)] = &[
    ("command", Category::Execute),
    ("cmd", Category::Execute),
    ("script", Category::Execute),
    ("code", Category::Execute),
    ("shell", Category::Execute),
    ("program", Category::Execute),
    ("sql", Category::Execute),
    ("query", Category::Read),
    ("path", Category::Read),
    ("paths", Category::Read),
    ("file", Category::Read),
    ("filename", Category::Read),
    ("filepath", Category::Read),
    ("file_path", Category::Read),
    ("directory", Category::Read),
    ("url", Category::Network),
    ("uri", Category::Network),
    ("endpoint", Category::Network),
    ("host", Category::Network),
    ("hostname", Category::Network),
    ("password", Category::CredentialAccess),
    ("token", Category::CredentialAccess),
    ("secret", Category::CredentialAccess),
    ("api_key", Category::CredentialAccess),
    ("apikey", Category::CredentialAccess),
    ("currency", Category::Financial),
    ("iban", Category::Financial),
    ("card_number", Category::Financial),
];

/// Argument names that carry a shell command (for the recommended shell-aware rule).
pub const SHELL_ARGUMENTS: &[&str] = &["command", "cmd", "script", "shell"];

/// A built-in catalog file: the tools of one known server, keyed by the name the server
/// gives in `serverInfo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownServer {
    /// `serverInfo.name` as the server reports it.
    pub server_info_name: String,
    /// Where the server comes from, for people (`npm @modelcontextprotocol/server-everything`).
    pub package: String,
    /// Its tools.
    pub tools: BTreeMap<String, KnownTool>,
}

/// A built-in entry for one tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownTool {
    /// What it does.
    pub categories: Vec<Category>,
    /// How much harm it can do.
    pub severity: Severity,
    /// Why, in a few words.
    pub why: String,
    /// The argument holding a shell command, when it has one.
    #[serde(default)]
    pub shell_argument: Option<String>,
}

/// The built-in catalog files, embedded in the binary.
const BUILTIN: &[(&str, &str)] = &[
    ("ssh-mcp.toml", include_str!("../data/ssh-mcp.toml")),
    (
        "server-everything.toml",
        include_str!("../data/server-everything.toml"),
    ),
    (
        "server-filesystem.toml",
        include_str!("../data/server-filesystem.toml"),
    ),
    (
        "mcp-server-git.toml",
        include_str!("../data/mcp-server-git.toml"),
    ),
    (
        "mcp-server-fetch.toml",
        include_str!("../data/mcp-server-fetch.toml"),
    ),
    (
        "mcp-server-time.toml",
        include_str!("../data/mcp-server-time.toml"),
    ),
];

/// The built-in catalog entries.
pub fn builtin() -> Vec<KnownServer> {
    BUILTIN
        .iter()
        .map(|(file, text)| {
            toml::from_str(text).unwrap_or_else(|e| panic!("built-in catalog {file}: {e}"))
        })
        .collect()
}

/// An operator's classification of a tool (`[catalog.overrides."server/tool"]`): final for
/// categories and severity; poisoning findings still raise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The configured server name.
    pub server: String,
    /// The tool name on that server; `*` for every tool of the server.
    pub tool: String,
    /// Categories to set, if given.
    pub categories: Option<Vec<Category>>,
    /// Severity to set, if given.
    pub severity: Option<Severity>,
    /// Why, for the inventory.
    pub why: Option<String>,
}

/// Who a tool belongs to.
#[derive(Debug, Clone, Copy)]
pub struct ServerRef<'a> {
    /// The configured server name.
    pub name: &'a str,
    /// `serverInfo.name` as the server reported it, if known.
    pub info_name: Option<&'a str>,
}

/// Classifies tools: built-in entries, overrides and heuristics, compiled once.
#[derive(Debug)]
pub struct Classifier {
    known: Vec<KnownServer>,
    overrides: Vec<Override>,
    phrases: Vec<(regex::Regex, Category)>,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(builtin(), Vec::new())
    }
}

impl Classifier {
    /// A classifier over these known servers and overrides.
    pub fn new(known: Vec<KnownServer>, overrides: Vec<Override>) -> Classifier {
        let phrases = DESCRIPTION_PHRASES
            .iter()
            .map(|(re, c)| (regex::Regex::new(re).expect("built-in phrase compiles"), *c))
            .collect();
        Classifier {
            known,
            overrides,
            phrases,
        }
    }

    /// The built-in entry for a tool, when its server is known.
    pub fn known(&self, server: ServerRef<'_>, tool: &str) -> Option<&KnownTool> {
        let info = server.info_name?;
        self.known
            .iter()
            .find(|k| k.server_info_name == info)?
            .tools
            .get(tool)
    }

    /// The known servers.
    pub fn known_servers(&self) -> &[KnownServer] {
        &self.known
    }

    fn override_for(&self, server: &str, tool: &str) -> Option<&Override> {
        let exact = self
            .overrides
            .iter()
            .find(|o| o.server == server && o.tool == tool);
        exact.or_else(|| {
            self.overrides
                .iter()
                .find(|o| o.server == server && o.tool == "*")
        })
    }

    /// Classifies one tool, with the poisoning checks of its own text. Cross-server checks
    /// (shadowing) need every server's tools: see [`crate::shadowing`].
    pub fn classify(&self, server: ServerRef<'_>, tool: &ToolDef) -> Classification {
        let mut evidence = Vec::new();
        let mut categories: Vec<Category> = Vec::new();
        let mut floor = Severity::Low;
        if let Some(known) = self.known(server, tool.name()) {
            evidence.push(Evidence {
                source: Source::Known,
                detail: format!(
                    "built-in entry for {}: {}",
                    server.info_name.unwrap_or_default(),
                    known.why
                ),
                categories: known.categories.clone(),
                severity: Some(known.severity),
            });
            categories.extend(&known.categories);
            floor = known.severity;
        } else {
            self.heuristics(tool, &mut categories, &mut evidence);
        }
        annotations(tool, &mut categories, &mut evidence);
        categories.sort();
        categories.dedup();
        let mut severity = floor.max(severity_of(&categories));
        if categories.is_empty() {
            evidence.push(Evidence {
                source: Source::Default,
                detail:
                    "nothing in its name, description, arguments or annotations says what it does"
                        .into(),
                categories: Vec::new(),
                severity: Some(Severity::Medium),
            });
            severity = Severity::Medium;
        }
        if let Some(o) = self.override_for(server.name, tool.name()) {
            if let Some(c) = &o.categories {
                categories = c.clone();
                categories.sort();
                categories.dedup();
            }
            severity = o.severity.unwrap_or_else(|| severity_of(&categories));
            evidence.insert(
                0,
                Evidence {
                    source: Source::Override,
                    detail: format!(
                        "operator override for {}/{}{}",
                        o.server,
                        o.tool,
                        o.why
                            .as_deref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default()
                    ),
                    categories: o.categories.clone().unwrap_or_default(),
                    severity: o.severity,
                },
            );
        }
        let mut class = Classification {
            categories,
            severity,
            evidence,
            findings: Vec::new(),
        };
        for finding in poisoning(tool) {
            class.add_finding(finding);
        }
        class
    }

    fn heuristics(
        &self,
        tool: &ToolDef,
        categories: &mut Vec<Category>,
        evidence: &mut Vec<Evidence>,
    ) {
        for word in name_words(tool.name()) {
            if let Some((_, c)) = NAME_WORDS.iter().find(|(w, _)| *w == word) {
                categories.push(*c);
                evidence.push(Evidence {
                    source: Source::Name,
                    detail: format!("name word {word:?}"),
                    categories: vec![*c],
                    severity: None,
                });
            }
        }
        let description = tool.description().to_lowercase();
        for (re, c) in &self.phrases {
            if let Some(m) = re.find(&description) {
                categories.push(*c);
                evidence.push(Evidence {
                    source: Source::Description,
                    detail: format!("description says {:?}", m.as_str()),
                    categories: vec![*c],
                    severity: None,
                });
            }
        }
        for (name, schema) in tool.arguments() {
            let lowered = name.to_lowercase();
            let Some((_, c)) = ARGUMENT_SHAPES.iter().find(|(n, _)| *n == lowered) else {
                continue;
            };
            let kind = schema.get("type");
            let stringy = match kind {
                None => true,
                Some(serde_json::Value::String(t)) => t == "string" || t == "array",
                Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                Some(_) => false,
            };
            if stringy {
                categories.push(*c);
                evidence.push(Evidence {
                    source: Source::Argument,
                    detail: format!("string argument {name:?}"),
                    categories: vec![*c],
                    severity: None,
                });
            }
        }
    }

    /// The argument of a tool that holds a shell command, if any: from its built-in entry,
    /// else a string argument named like one when the tool executes.
    pub fn shell_argument(
        &self,
        server: ServerRef<'_>,
        tool: &ToolDef,
        class: &Classification,
    ) -> Option<String> {
        if let Some(known) = self.known(server, tool.name()) {
            return known.shell_argument.clone();
        }
        if !class.is(Category::Execute) {
            return None;
        }
        tool.arguments()
            .find(|(n, s)| {
                SHELL_ARGUMENTS.contains(&n.to_lowercase().as_str())
                    && s.get("type").and_then(|t| t.as_str()).unwrap_or("string") == "string"
            })
            .map(|(n, _)| n.to_owned())
    }
}

/// Explicit annotations raise: `destructiveHint: true` adds destructive, `readOnlyHint:
/// false` adds write, `openWorldHint: true` adds network. `readOnlyHint: true` is recorded
/// and lowers nothing: a server's word cannot make a tool look safer.
fn annotations(tool: &ToolDef, categories: &mut Vec<Category>, evidence: &mut Vec<Evidence>) {
    let read_only = tool.hint("readOnlyHint");
    let rules = [
        ("destructiveHint", true, Category::Destructive),
        ("readOnlyHint", false, Category::Write),
        ("openWorldHint", true, Category::Network),
    ];
    for (key, value, category) in rules {
        // The spec gives destructiveHint meaning only when the tool is not read-only.
        if key == "destructiveHint" && read_only == Some(true) {
            continue;
        }
        if tool.hint(key) == Some(value) {
            categories.push(category);
            evidence.push(Evidence {
                source: Source::Annotation,
                detail: format!("{key}: {value}"),
                categories: vec![category],
                severity: None,
            });
        }
    }
    if read_only == Some(true) {
        evidence.push(Evidence {
            source: Source::Annotation,
            detail: "readOnlyHint: true (not trusted to lower risk)".into(),
            categories: Vec::new(),
            severity: None,
        });
    }
}

/// The severity categories imply: the highest single one, and critical for arbitrary code
/// that reaches other machines or destroys data, and for money that moves.
pub fn severity_of(categories: &[Category]) -> Severity {
    let has = |c| categories.contains(&c);
    if (has(Category::Execute) && (has(Category::Network) || has(Category::Destructive)))
        || (has(Category::Financial) && (has(Category::Write) || has(Category::Destructive)))
    {
        return Severity::Critical;
    }
    categories
        .iter()
        .map(|c| c.base_severity())
        .max()
        .unwrap_or(Severity::Low)
}

/// The words of a tool name, lowercased: `gitCreateBranch`, `git_create-branch` and
/// `git.create branch` all give `git`, `create`, `branch`.
pub fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// The poisoning findings of one tool's own text: title, description, schemas.
pub fn poisoning(tool: &ToolDef) -> Vec<Finding> {
    let mut findings = Vec::new();
    scan::scan_text("name", tool.name(), &mut findings);
    findings.retain(|f| f.kind == FindingKind::InvisibleCharacters);
    scan::scan_text("title", tool.title(), &mut findings);
    scan::scan_text("description", tool.description(), &mut findings);
    for key in ["inputSchema", "outputSchema"] {
        if let Some(schema) = tool.raw.get(key) {
            scan::scan_value(key, schema, &mut findings);
        }
    }
    findings
}
