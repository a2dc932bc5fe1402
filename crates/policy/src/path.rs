//! Predicate paths: `args.a.b`, `args.list[0]`, `args["odd.key"]`, and the call's context
//! values `grant`, `session`, `server`, `tool`.

use serde_json::Value;

/// Where a predicate looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// The call's arguments (`args`), then the steps into them.
    Args(Vec<Step>),
    /// The grant's name.
    Grant,
    /// The downstream session id.
    Session,
    /// The upstream server's name.
    Server,
    /// The tool's name on its server.
    Tool,
}

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array item.
    Index(usize),
}

/// A parsed path, with its source text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// What the path was written as.
    pub text: String,
    /// Where it points.
    pub root: Root,
}

impl Path {
    /// Parses a path; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Path, String> {
        let root_end = text.find(['.', '[']).unwrap_or(text.len());
        let (root, rest) = text.split_at(root_end);
        let root = match root {
            "args" => Root::Args(parse_steps(rest)?),
            "grant" | "session" | "server" | "tool" if !rest.is_empty() => {
                return Err(format!("`{root}` is a string; it has no members"));
            }
            "grant" => Root::Grant,
            "session" => Root::Session,
            "server" => Root::Server,
            "tool" => Root::Tool,
            "" => return Err("a path must not be empty".into()),
            other => {
                return Err(format!(
                    "unknown path root `{other}`: paths start with `args`, `grant`, `session`, `server` or `tool`"
                ));
            }
        };
        Ok(Path {
            text: text.to_owned(),
            root,
        })
    }

    /// The steps into the arguments, or `None` for a context value.
    pub fn arg_steps(&self) -> Option<&[Step]> {
        match &self.root {
            Root::Args(steps) => Some(steps),
            _ => None,
        }
    }
}

fn parse_steps(mut rest: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err("empty member name (two dots, or a trailing dot)".into());
            }
            steps.push(Step::Key(r[..end].to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]").ok_or("unterminated [\"...\"] member name")?;
            steps.push(Step::Key(r[..end].to_owned()));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("unterminated [index]")?;
            let index = r[..end]
                .parse()
                .map_err(|_| format!("`[{}]` is not an array index", &r[..end]))?;
            steps.push(Step::Index(index));
            rest = &r[end + 1..];
        } else {
            return Err(format!("unexpected `{rest}`"));
        }
    }
    Ok(steps)
}

/// Follows steps into a value.
pub fn walk<'v>(mut value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    for step in steps {
        value = match step {
            Step::Key(k) => value.as_object()?.get(k)?,
            Step::Index(i) => value.as_array()?.get(*i)?,
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_walks() {
        let args = json!({"a": {"b": [10, {"c.d": true}]}});
        let p = Path::parse("args.a.b[1][\"c.d\"]").unwrap();
        assert_eq!(walk(&args, p.arg_steps().unwrap()), Some(&json!(true)));
        let p = Path::parse("args.a.b[0]").unwrap();
        assert_eq!(walk(&args, p.arg_steps().unwrap()), Some(&json!(10)));
        assert_eq!(Path::parse("grant").unwrap().root, Root::Grant);
        assert!(
            Path::parse("arg.a")
                .unwrap_err()
                .contains("unknown path root")
        );
        assert!(Path::parse("args..a").is_err());
        assert!(Path::parse("args[x]").is_err());
        assert!(Path::parse("tool.x").is_err());
    }
}
