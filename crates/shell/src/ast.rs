//! The syntax tree [`parse`](crate::parse) returns: small, owned, and complete enough that
//! every place a shell could run code (substitutions inside words, here-document bodies,
//! arithmetic) is a node the checker visits.

/// A list of commands: the whole input, a `$(...)` body, a `{ ...; }` body, and so on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Script {
    pub items: Vec<Item>,
}

/// One command of a list, as ended by `;`, a newline or `&`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub and_or: AndOr,
    /// Ended by `&`: runs in the background.
    pub background: bool,
}

/// Pipelines joined by `&&` and `||`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AndOr {
    pub first: Pipeline,
    pub rest: Vec<(Connector, Pipeline)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    And,
    Or,
}

/// Commands joined by `|` or `|&`, optionally prefixed by `!` or the `time` keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub negated: bool,
    pub timed: bool,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Simple(SimpleCommand),
    Compound(Compound, Vec<Redirect>),
    Function(FunctionDef),
    /// bash `coproc [NAME]`: the command runs in the background; `NAME` (for a compound
    /// command) is the array that receives its descriptors.
    Coproc(Option<String>, Box<Command>),
}

/// Assignments, words and redirections, e.g. `X=1 ls -l >out`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimpleCommand {
    pub assignments: Vec<Assignment>,
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
    /// Where the command starts in the parsed text (in chars); orders commands for messages.
    pub offset: usize,
}

/// `NAME=value`, `NAME+=value`, `NAME[i]=value` or `NAME=(a b c)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub subscript: Option<Arith>,
    pub append: bool,
    pub value: Word,
}

/// `name() compound` or `function name compound`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDef {
    pub name: String,
    pub body: Box<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compound {
    Brace(Script),
    Subshell(Script),
    If {
        branches: Vec<(Script, Script)>,
        otherwise: Option<Script>,
    },
    /// `for` (or `select` when `select` is true); `words` is `None` without `in`.
    For {
        var: String,
        words: Option<Vec<Word>>,
        body: Script,
        select: bool,
    },
    /// `for ((init; test; step))`.
    ArithFor {
        header: Arith,
        body: Script,
    },
    While {
        until: bool,
        cond: Script,
        body: Script,
    },
    Case {
        word: Word,
        arms: Vec<CaseArm>,
    },
    /// `(( expression ))`.
    Arith(Arith),
    /// `[[ ... ]]`.
    Cond(Vec<CondToken>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseArm {
    pub patterns: Vec<Word>,
    pub body: Script,
}

/// A token inside `[[ ... ]]`: a word, or an operator such as `&&`, `!`, `(` or `<`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CondToken {
    Word(Word),
    Op(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The file descriptor before the operator: `2` in `2>f`, `fd` in `{fd}>f`.
    pub fd: Option<String>,
    pub op: RedirOp,
    pub target: RedirTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirOp {
    /// `<`
    In,
    /// `>`
    Out,
    /// `>>`
    Append,
    /// `>|`
    Clobber,
    /// `<>`
    ReadWrite,
    /// `<&`
    DupIn,
    /// `>&`
    DupOut,
    /// `&>`
    OutErr,
    /// `&>>`
    AppendOutErr,
    /// `<<` (`strip_tabs` for `<<-`)
    HereDoc { strip_tabs: bool },
    /// `<<<`
    HereString,
}

impl RedirOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirOp::In => "<",
            RedirOp::Out => ">",
            RedirOp::Append => ">>",
            RedirOp::Clobber => ">|",
            RedirOp::ReadWrite => "<>",
            RedirOp::DupIn => "<&",
            RedirOp::DupOut => ">&",
            RedirOp::OutErr => "&>",
            RedirOp::AppendOutErr => "&>>",
            RedirOp::HereDoc { strip_tabs: false } => "<<",
            RedirOp::HereDoc { strip_tabs: true } => "<<-",
            RedirOp::HereString => "<<<",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirTarget {
    Word(Word),
    HereDoc(HereDoc),
}

/// A here-document. An unquoted delimiter means the body is expanded (it can hold `$(...)`),
/// so the body is parsed like a double-quoted string; a quoted one means it is plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HereDoc {
    pub delimiter: String,
    pub quoted: bool,
    pub body: Word,
}

/// A shell word: the pieces it is made of, before expansion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word {
    pub parts: Vec<WordPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WordPart {
    /// Unquoted text. At the top level of a word it is subject to globbing, brace and tilde
    /// expansion; inside [`WordPart::DoubleQuoted`] or [`Arith`] it is just text.
    Literal(String),
    /// Text that was quoted (`'...'`, `\x`, `$'...'`, already decoded): never expanded.
    Quoted(String),
    /// `"..."` or `$"..."`.
    DoubleQuoted(Vec<WordPart>),
    /// `$name`, `$1`, `${...}`.
    Param(Box<Param>),
    /// `$(...)` or `` `...` ``.
    CommandSub(Script),
    /// `$((...))` or `$[...]`.
    Arith(Arith),
    /// `<(...)` (input) or `>(...)` (output).
    ProcessSub { output: bool, script: Script },
    /// The `(a b c)` of an array assignment.
    Array(Vec<Word>),
}

/// A parameter expansion: `$x`, `${x}`, `${#x}`, `${!x}`, `${a[i]:-word}` ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// `${#x}`
    pub length: bool,
    /// `${!x}`: the value of `x` names the variable to expand.
    pub indirect: bool,
    pub subscript: Option<Arith>,
    /// The operator after the name, e.g. `:-`, `#`, `//`, `:`.
    pub op: Option<String>,
    pub arg: Option<Word>,
}

/// Arithmetic text: [`WordPart::Literal`] parts are expression text, the others are
/// expansions inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Arith {
    pub parts: Vec<WordPart>,
}

/// What a word is made of once quoting is removed, if nothing in it depends on run time.
///
/// Globs (`*`, `?`, `[...]`), brace expansion (`{a,b}`), expansions (`$x`, `$(...)`) and a
/// stray unquoted `$` (zsh reads `$=x` as an expansion) make the word dynamic: `None`.
/// Only unquoted characters count, but they pair up across quoted parts: `r["m"]` is the
/// glob `r[m]`, which matches a file named `rm`.
pub fn static_word(word: &Word) -> Option<String> {
    let mut out = String::new();
    let mut brace = BraceScan::default();
    let mut bracket = false;
    for part in &word.parts {
        match part {
            WordPart::Literal(text) => {
                let mut chars = text.chars().peekable();
                while let Some(c) = chars.next() {
                    match c {
                        '*' | '?' | '$' => return None,
                        '[' => bracket = true,
                        ']' if bracket => return None,
                        _ => {}
                    }
                    if brace.feed(c, chars.peek().copied()) {
                        return None;
                    }
                }
                out.push_str(text);
            }
            WordPart::Quoted(text) => out.push_str(text),
            WordPart::DoubleQuoted(inner) => {
                for p in inner {
                    match p {
                        WordPart::Literal(t) | WordPart::Quoted(t) => out.push_str(t),
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Finds unquoted brace expansion (`{a,b}`, `{1..3}`) one character at a time.
#[derive(Default)]
struct BraceScan {
    open: bool,
    separated: bool,
}

impl BraceScan {
    fn feed(&mut self, c: char, next: Option<char>) -> bool {
        match c {
            '{' => {
                self.open = true;
                self.separated = false;
            }
            ',' if self.open => self.separated = true,
            '.' if self.open && next == Some('.') => self.separated = true,
            '}' if self.open && self.separated => return true,
            _ => {}
        }
        false
    }
}

/// The text of a word up to its first part that depends on run time, e.g. `FOO=` for
/// `FOO="$BAR"`. Used to read variable names out of partly dynamic arguments.
pub(crate) fn static_prefix(word: &Word) -> String {
    let mut out = String::new();
    for part in &word.parts {
        match part {
            WordPart::Literal(t) | WordPart::Quoted(t) => out.push_str(t),
            WordPart::DoubleQuoted(inner) => {
                for p in inner {
                    match p {
                        WordPart::Literal(t) | WordPart::Quoted(t) => out.push_str(t),
                        _ => return out,
                    }
                }
            }
            _ => return out,
        }
    }
    out
}
