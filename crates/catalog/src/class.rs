//! What a classification says: categories, a severity, and the evidence behind them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a tool can do. A tool may be in several categories (`ssh_exec` executes and reaches
/// the network); policies select by any of them (`category:execute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Reads data and changes nothing.
    Read,
    /// Creates or changes data.
    Write,
    /// Reaches other machines or the internet.
    Network,
    /// Runs commands or code.
    Execute,
    /// Deletes or overwrites data, or stops things.
    Destructive,
    /// Reads or handles secrets: passwords, tokens, keys, the environment.
    CredentialAccess,
    /// Moves money.
    Financial,
}

impl Category {
    /// Every category, mildest first.
    pub const ALL: [Category; 7] = [
        Category::Read,
        Category::Write,
        Category::Network,
        Category::Execute,
        Category::Destructive,
        Category::CredentialAccess,
        Category::Financial,
    ];

    /// The name policies use (`category:<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Network => "network",
            Category::Execute => "execute",
            Category::Destructive => "destructive",
            Category::CredentialAccess => "credential-access",
            Category::Financial => "financial",
        }
    }

    /// Parses a category name.
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The severity this category alone implies.
    pub fn base_severity(self) -> Severity {
        match self {
            Category::Read => Severity::Low,
            Category::Write | Category::Network => Severity::Medium,
            Category::Execute
            | Category::Destructive
            | Category::CredentialAccess
            | Category::Financial => Severity::High,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much harm a tool can do in the wrong hands.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reads harmless data.
    #[default]
    Low,
    /// Changes data or reaches out; recoverable.
    Medium,
    /// Runs code, destroys data, touches secrets or money.
    High,
    /// Arbitrary code on reachable machines, moving money, or a poisoned definition.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The name policies use (`severity:<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a severity name.
    pub fn parse(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a piece of evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A built-in catalog entry for a known server.
    Known,
    /// The operator's override in the configuration.
    Override,
    /// A tool annotation the server declared (it can raise risk, never lower it).
    Annotation,
    /// A word of the tool's name.
    Name,
    /// A phrase of the tool's description.
    Description,
    /// The shape of an argument (a string named `command`, `url`, ...).
    Argument,
    /// A poisoning finding.
    Finding,
    /// Nothing was recognised.
    Default,
}

/// One reason behind a classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Where it comes from.
    pub source: Source,
    /// What was seen, for people (`name word "delete"`, `destructiveHint: true`).
    pub detail: String,
    /// The categories it adds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<Category>,
    /// The severity it raises the tool to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// A sign that a definition tries to manipulate the agent rather than describe a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// Where in the definition (`description`, `inputSchema/properties/path/description`,
    /// `instructions`).
    #[serde(rename = "where")]
    pub location: String,
    /// What was found, for people (code points are written as `U+200B`).
    pub detail: String,
}

/// The kinds of poisoning finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Zero-width, bidi control, Unicode tag or other invisible characters.
    InvisibleCharacters,
    /// Text addressed to the model: "ignore previous", `<IMPORTANT>`, asking for secrets,
    /// asking to call other tools, asking to keep something from the user.
    HiddenInstruction,
    /// The tool has the name of another server's tool.
    Shadowing,
    /// The tool's text names another server's tool: the way a poisoned tool steers how the
    /// agent uses a trusted one ("when you call send_email, also ...").
    CrossServerReference,
}

impl FindingKind {
    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::InvisibleCharacters => "invisible-characters",
            FindingKind::HiddenInstruction => "hidden-instruction",
            FindingKind::Shadowing => "shadowing",
            FindingKind::CrossServerReference => "cross-server-reference",
        }
    }

    /// The severity a finding of this kind raises its tool to.
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::InvisibleCharacters => Severity::High,
            FindingKind::HiddenInstruction => Severity::Critical,
            FindingKind::Shadowing => Severity::Medium,
            FindingKind::CrossServerReference => Severity::High,
        }
    }
}

/// A tool's risk class and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// What the tool can do, mildest first; empty when nothing was recognised.
    pub categories: Vec<Category>,
    /// How much harm it can do.
    pub severity: Severity,
    /// The reasons, strongest source first.
    pub evidence: Vec<Evidence>,
    /// Poisoning findings (they also appear in `evidence` as raising the severity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

impl Classification {
    /// The category names, for matching policies' `category:` keys.
    pub fn category_names(&self) -> Vec<&'static str> {
        self.categories.iter().map(|c| c.as_str()).collect()
    }

    /// Whether the tool is in `category`.
    pub fn is(&self, category: Category) -> bool {
        self.categories.contains(&category)
    }

    /// Adds a finding and raises the severity it implies.
    pub fn add_finding(&mut self, finding: Finding) {
        if self.findings.contains(&finding) {
            return;
        }
        let severity = finding.kind.severity();
        self.evidence.push(Evidence {
            source: Source::Finding,
            detail: format!(
                "{} in {}: {}",
                finding.kind.as_str(),
                finding.location,
                finding.detail
            ),
            categories: Vec::new(),
            severity: Some(severity),
        });
        self.severity = self.severity.max(severity);
        self.findings.push(finding);
    }
}
