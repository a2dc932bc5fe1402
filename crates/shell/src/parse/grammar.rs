//! The command grammar: lists, pipelines, compound commands, simple commands,
//! assignments and redirections. Words are read by [`crate::word`].

use super::{Parser, R, is_meta, is_name_char, is_name_start};
use crate::ast::*;
use crate::error::ParseError;

impl Parser<'_> {
    pub(crate) fn program(&mut self) -> R<Script> {
        let script = self.list(&[])?;
        if self.pos < self.s.len() {
            return Err(self.unexpected());
        }
        if let Some(p) = self.pending.first() {
            return Err(ParseError::UnterminatedHeredoc(p.delimiter.clone()));
        }
        Ok(script)
    }

    /// A list of commands up to end of input or one of `stops` (`)`, `;;`, or a keyword).
    pub(crate) fn list(&mut self, stops: &[&str]) -> R<Script> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            self.linebreak()?;
            if self.pos >= self.s.len() || self.at_stop(stops) {
                break;
            }
            let and_or = self.and_or()?;
            self.skip_blanks();
            self.skip_comment();
            let mut background = false;
            match self.peek() {
                Some(';') if !matches!(self.peek_at(1), Some(';' | '&')) => self.pos += 1,
                Some('&') => {
                    self.pos += 1;
                    background = true;
                }
                Some('\n') => self.newline()?,
                _ => {
                    items.push(Item { and_or, background });
                    if self.pos >= self.s.len() || self.at_stop(stops) {
                        break;
                    }
                    return Err(self.unexpected());
                }
            }
            items.push(Item { and_or, background });
        }
        self.leave();
        Ok(Script { items })
    }

    fn body(&mut self, stops: &[&str]) -> R<Script> {
        let script = self.list(stops)?;
        if script.items.is_empty() {
            return Err(self.unexpected());
        }
        Ok(script)
    }

    fn and_or(&mut self) -> R<AndOr> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            self.skip_blanks();
            let connector = if self.starts_with("&&") {
                Connector::And
            } else if self.starts_with("||") {
                Connector::Or
            } else {
                break;
            };
            self.pos += 2;
            self.linebreak()?;
            rest.push((connector, self.pipeline()?));
        }
        Ok(AndOr { first, rest })
    }

    fn pipeline(&mut self) -> R<Pipeline> {
        let mut negated = false;
        let mut timed = false;
        loop {
            self.skip_blanks();
            if self.eat_reserved("!") {
                negated = !negated;
                continue;
            }
            let before = self.pos;
            if self.eat_reserved("time") {
                self.skip_blanks();
                let (next, joined) = self.logical_word(self.pos);
                if joined && next.starts_with('-') {
                    return Err(ParseError::Unsupported(
                        "a line continuation inside an option of `time`",
                    ));
                }
                while matches!(self.peek_plain().as_deref(), Some("-p")) {
                    self.pos += 2;
                    self.skip_blanks();
                }
                if matches!(self.peek_plain().as_deref(), Some("--")) {
                    self.pos += 2;
                } else if matches!(self.peek_plain(), Some(w) if w.starts_with('-')) {
                    // `time -v cmd` is the `time` program, not the keyword: parse it as one.
                    self.pos = before;
                    break;
                }
                timed = true;
                continue;
            }
            break;
        }
        let mut commands = vec![self.command()?];
        loop {
            self.skip_blanks();
            if self.starts_with("||") {
                break;
            }
            if self.starts_with("|&") {
                self.pos += 2;
            } else if self.peek() == Some('|') {
                self.pos += 1;
            } else {
                break;
            }
            self.linebreak()?;
            commands.push(self.command()?);
        }
        Ok(Pipeline {
            negated,
            timed,
            commands,
        })
    }

    fn command(&mut self) -> R<Command> {
        self.skip_blanks();
        match self.peek_reserved() {
            Some("function") => return self.function_keyword(),
            Some("coproc") => return self.coproc(),
            Some("{" | "if" | "while" | "until" | "for" | "select" | "case" | "[[") | None => {}
            Some(_) => return Err(self.unexpected()),
        }
        if let Some(compound) = self.compound()? {
            let redirects = self.redirects()?;
            return Ok(Command::Compound(compound, redirects));
        }
        self.simple()
    }

    fn redirects(&mut self) -> R<Vec<Redirect>> {
        let mut out = Vec::new();
        loop {
            self.skip_blanks();
            match self.redirect()? {
                Some(r) => out.push(r),
                None => return Ok(out),
            }
        }
    }

    fn compound(&mut self) -> R<Option<Compound>> {
        self.skip_blanks();
        if self.starts_with("((") && self.arith_ahead(self.pos + 2) {
            self.pos += 2;
            return Ok(Some(Compound::Arith(self.arith_until(Some("))"))?)));
        }
        if self.peek() == Some('(') {
            self.pos += 1;
            let script = self.body(&[")"])?;
            self.expect_char(')', ")")?;
            return Ok(Some(Compound::Subshell(script)));
        }
        let Some(kw) = self.peek_reserved() else {
            return Ok(None);
        };
        let compound = match kw {
            "{" => {
                self.pos += 1;
                let script = self.body(&["}"])?;
                self.expect_reserved("}")?;
                Compound::Brace(script)
            }
            "if" => {
                self.pos += 2;
                let mut branches = Vec::new();
                let mut otherwise = None;
                loop {
                    let cond = self.body(&["then"])?;
                    self.expect_reserved("then")?;
                    let then = self.body(&["elif", "else", "fi"])?;
                    branches.push((cond, then));
                    if self.eat_reserved("elif") {
                        continue;
                    }
                    if self.eat_reserved("else") {
                        otherwise = Some(self.body(&["fi"])?);
                    }
                    self.expect_reserved("fi")?;
                    break;
                }
                Compound::If {
                    branches,
                    otherwise,
                }
            }
            "while" | "until" => {
                self.pos += kw.len();
                let cond = self.body(&["do"])?;
                let body = self.do_group()?;
                Compound::While {
                    until: kw == "until",
                    cond,
                    body,
                }
            }
            "for" | "select" => return self.for_loop(kw == "select").map(Some),
            "case" => return self.case().map(Some),
            "[[" => {
                self.pos += 2;
                Compound::Cond(self.cond()?)
            }
            _ => return Ok(None),
        };
        Ok(Some(compound))
    }

    fn do_group(&mut self) -> R<Script> {
        self.expect_reserved("do")?;
        let body = self.body(&["done"])?;
        self.expect_reserved("done")?;
        Ok(body)
    }

    fn name(&mut self) -> Option<String> {
        let word = self.peek_plain()?;
        let mut chars = word.chars();
        if !chars.next().is_some_and(is_name_start) || !chars.all(is_name_char) {
            return None;
        }
        self.pos += word.len();
        Some(word)
    }

    fn for_loop(&mut self, select: bool) -> R<Compound> {
        self.pos += if select { 6 } else { 3 };
        self.skip_blanks();
        if !select && self.starts_with("((") {
            self.pos += 2;
            let header = self.arith_until(Some("))"))?;
            self.skip_blanks();
            if self.peek() == Some(';') {
                self.pos += 1;
            }
            let body = self.do_group()?;
            return Ok(Compound::ArithFor { header, body });
        }
        let var = self.name().ok_or_else(|| self.unexpected())?;
        self.linebreak()?;
        let words = if self.eat_reserved("in") {
            let mut words = Vec::new();
            loop {
                self.skip_blanks();
                self.skip_comment();
                match self.peek() {
                    None | Some('\n') => break,
                    Some(';') => {
                        self.pos += 1;
                        break;
                    }
                    Some(c) if is_meta(c) && !self.starts_with("<(") && !self.starts_with(">(") => {
                        return Err(self.unexpected());
                    }
                    _ => words.push(self.word()?),
                }
            }
            Some(words)
        } else {
            self.skip_blanks();
            if self.peek() == Some(';') {
                self.pos += 1;
            }
            None
        };
        let body = self.do_group()?;
        Ok(Compound::For {
            var,
            words,
            body,
            select,
        })
    }

    fn case(&mut self) -> R<Compound> {
        self.pos += 4;
        self.skip_blanks();
        let word = self.word()?;
        if word.parts.is_empty() {
            return Err(self.unexpected());
        }
        self.expect_reserved("in")?;
        let mut arms = Vec::new();
        loop {
            self.linebreak()?;
            if self.eat_reserved("esac") {
                break;
            }
            if self.pos >= self.s.len() {
                return Err(ParseError::UnexpectedEnd("esac"));
            }
            if self.peek() == Some('(') {
                self.pos += 1;
            }
            let mut patterns = Vec::new();
            loop {
                self.skip_blanks();
                let pattern = self.word()?;
                if pattern.parts.is_empty() {
                    return Err(self.unexpected());
                }
                patterns.push(pattern);
                self.skip_blanks();
                if self.peek() == Some('|') {
                    self.pos += 1;
                    continue;
                }
                break;
            }
            self.expect_char(')', ")")?;
            let body = self.list(&[";;", "esac"])?;
            arms.push(CaseArm { patterns, body });
            self.skip_blanks();
            if self.starts_with(";;&") {
                self.pos += 3;
            } else if self.starts_with(";;") || self.starts_with(";&") {
                self.pos += 2;
            } else if self.peek_reserved() != Some("esac") {
                return Err(self.unexpected());
            }
        }
        Ok(Compound::Case { word, arms })
    }

    fn cond(&mut self) -> R<Vec<CondToken>> {
        let mut tokens = Vec::new();
        loop {
            loop {
                self.skip_blanks();
                if self.peek() == Some('\n') {
                    self.newline()?;
                } else {
                    break;
                }
            }
            if self.pos >= self.s.len() {
                return Err(ParseError::UnexpectedEnd("]]"));
            }
            if self.peek_reserved() == Some("]]") {
                self.pos += 2;
                break;
            }
            if self.starts_with("&&") || self.starts_with("||") {
                tokens.push(CondToken::Op(
                    self.s[self.pos..self.pos + 2].iter().collect(),
                ));
                self.pos += 2;
                continue;
            }
            match self.peek() {
                Some('<' | '>') if self.peek_at(1) == Some('(') => {}
                Some(c @ ('(' | ')' | '<' | '>')) => {
                    tokens.push(CondToken::Op(c.to_string()));
                    self.pos += 1;
                    continue;
                }
                Some(';' | '&' | '|') => return Err(self.unexpected()),
                _ => {}
            }
            let word = self.word()?;
            if word.parts.is_empty() {
                return Err(self.unexpected());
            }
            let regex = static_word(&word).as_deref() == Some("=~");
            tokens.push(CondToken::Word(word));
            if regex {
                self.skip_blanks();
                let pattern = self.regex_word()?;
                if pattern.parts.is_empty() {
                    return Err(self.unexpected());
                }
                tokens.push(CondToken::Word(pattern));
            }
        }
        if tokens.is_empty() {
            return Err(ParseError::Unexpected("]]".into()));
        }
        Ok(tokens)
    }

    fn function_keyword(&mut self) -> R<Command> {
        self.pos += "function".len();
        self.skip_blanks();
        let name = self.peek_plain().ok_or_else(|| self.unexpected())?;
        if name.contains('=') {
            return Err(self.unexpected());
        }
        self.pos += name.chars().count();
        self.skip_blanks();
        if self.peek() == Some('(') {
            self.pos += 1;
            self.skip_blanks();
            self.expect_char(')', ")")?;
        }
        self.function_body(name)
    }

    fn function_body(&mut self, name: String) -> R<Command> {
        self.linebreak()?;
        let Some(compound) = self.compound()? else {
            return Err(self.unexpected());
        };
        let redirects = self.redirects()?;
        Ok(Command::Function(FunctionDef {
            name,
            body: Box::new(Command::Compound(compound, redirects)),
        }))
    }

    fn coproc(&mut self) -> R<Command> {
        self.pos += "coproc".len();
        self.skip_blanks();
        if let Some(compound) = self.compound()? {
            let redirects = self.redirects()?;
            return Ok(Command::Coproc(
                None,
                Box::new(Command::Compound(compound, redirects)),
            ));
        }
        let save = self.pos;
        if let Some(name) = self.name() {
            self.skip_blanks();
            if let Some(compound) = self.compound()? {
                let redirects = self.redirects()?;
                return Ok(Command::Coproc(
                    Some(name),
                    Box::new(Command::Compound(compound, redirects)),
                ));
            }
            self.pos = save;
        }
        Ok(Command::Coproc(None, Box::new(self.simple()?)))
    }

    fn simple(&mut self) -> R<Command> {
        let mut sc = SimpleCommand {
            offset: self.base + self.pos,
            ..SimpleCommand::default()
        };
        loop {
            self.skip_blanks();
            if let Some(r) = self.redirect()? {
                sc.redirects.push(r);
                continue;
            }
            if sc.words.is_empty()
                && let Some(a) = self.assignment()?
            {
                sc.assignments.push(a);
                continue;
            }
            match self.peek() {
                None => break,
                Some('<' | '>') if self.peek_at(1) == Some('(') => {}
                Some('(') => {
                    // `name()`: a function definition.
                    if sc.words.len() == 1
                        && sc.assignments.is_empty()
                        && sc.redirects.is_empty()
                        && let [WordPart::Literal(name)] = sc.words[0].parts.as_slice()
                        && !name.contains('=')
                    {
                        let name = name.clone();
                        self.pos += 1;
                        self.skip_blanks();
                        self.expect_char(')', ")")?;
                        return self.function_body(name);
                    }
                    return Err(self.unexpected());
                }
                Some(c) if is_meta(c) => break,
                Some('#') => {
                    self.skip_comment();
                    break;
                }
                _ => {}
            }
            let decl = sc.words.first().and_then(static_word).is_some_and(|w| {
                matches!(
                    w.as_str(),
                    "declare" | "typeset" | "local" | "export" | "readonly"
                )
            });
            let word = self.word_in(false, decl)?;
            if word.parts.is_empty() {
                return Err(self.unexpected());
            }
            sc.words.push(word);
        }
        if sc.words.is_empty() && sc.assignments.is_empty() && sc.redirects.is_empty() {
            return Err(self.unexpected());
        }
        Ok(Command::Simple(sc))
    }

    /// `NAME=value`, `NAME+=value`, `NAME[sub]=value`, `NAME=(...)` at the cursor, if any.
    fn assignment(&mut self) -> R<Option<Assignment>> {
        let start = self.pos;
        let (logical, joined) = self.logical_word(self.pos);
        if joined
            && let Some(end) = logical.find(['=', '['])
            && end > 0
            && logical.starts_with(is_name_start)
            && logical[..end]
                .trim_end_matches('+')
                .chars()
                .all(is_name_char)
        {
            // bash joins `X\⏎=1` into the assignment `X=1` before reading it.
            return Err(ParseError::Unsupported(
                "a line continuation inside an assignment",
            ));
        }
        if !self.peek().is_some_and(is_name_start) {
            return Ok(None);
        }
        let mut i = self.pos;
        while self.s.get(i).copied().is_some_and(is_name_char) {
            i += 1;
        }
        let name: String = self.s[self.pos..i].iter().collect();
        if self.s.get(i) == Some(&'[') {
            // Only an assignment if a balanced `]` is followed by `=` or `+=`.
            let mut j = i;
            let mut level = 0usize;
            while let Some(&c) = self.s.get(j) {
                match c {
                    '[' => level += 1,
                    ']' => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    // Bounds the look-ahead to this command (bash allows blanks in subscripts).
                    '\n' | ';' | '&' | '|' | '<' | '>' => return Ok(None),
                    _ => {}
                }
                j += 1;
            }
            let after = self.s.get(j + 1).copied();
            let after2 = self.s.get(j + 2).copied();
            if !(after == Some('=') || (after == Some('+') && after2 == Some('='))) {
                return Ok(None);
            }
        } else if !(self.s.get(i) == Some(&'=')
            || (self.s.get(i) == Some(&'+') && self.s.get(i + 1) == Some(&'=')))
        {
            return Ok(None);
        }
        self.pos = i;
        let subscript = if self.peek() == Some('[') {
            self.pos += 1;
            Some(self.arith_until(Some("]"))?)
        } else {
            None
        };
        let append = if self.starts_with("+=") {
            self.pos += 2;
            true
        } else if self.peek() == Some('=') {
            self.pos += 1;
            false
        } else {
            self.pos = start;
            return Ok(None);
        };
        let value = if self.peek() == Some('(') {
            self.pos += 1;
            Word {
                parts: vec![WordPart::Array(self.array_elements()?)],
            }
        } else {
            self.word()?
        };
        Ok(Some(Assignment {
            name,
            subscript,
            append,
            value,
        }))
    }

    /// The words of `( ... )` in an array assignment, after the `(`.
    pub(crate) fn array_elements(&mut self) -> R<Vec<Word>> {
        self.enter()?;
        let mut words = Vec::new();
        loop {
            self.linebreak()?;
            match self.peek() {
                None => return Err(ParseError::UnexpectedEnd(")")),
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                _ => {}
            }
            let word = self.word()?;
            if word.parts.is_empty() {
                return Err(self.unexpected());
            }
            words.push(word);
        }
        self.leave();
        Ok(words)
    }

    fn redirect(&mut self) -> R<Option<Redirect>> {
        let start = self.pos;
        let mut fd = None;
        let mut i = self.pos;
        while self.s.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        if i > self.pos && matches!(self.s.get(i), Some('<' | '>')) {
            fd = Some(self.s[self.pos..i].iter().collect::<String>());
            self.pos = i;
        } else if self.peek() == Some('{') {
            let (logical, joined) = self.logical_word(self.pos);
            if joined && logical.contains('}') {
                return Err(ParseError::Unsupported(
                    "a line continuation inside a `{name}` redirection",
                ));
            }
            let mut j = self.pos + 1;
            while self.s.get(j).copied().is_some_and(is_name_char) {
                j += 1;
            }
            if j > self.pos + 1
                && self.s.get(j) == Some(&'}')
                && matches!(self.s.get(j + 1), Some('<' | '>'))
            {
                fd = Some(self.s[self.pos + 1..j].iter().collect::<String>());
                self.pos = j + 1;
            }
        }
        let ops: &[(&str, RedirOp)] = &[
            ("<<<", RedirOp::HereString),
            ("<<-", RedirOp::HereDoc { strip_tabs: true }),
            ("<<", RedirOp::HereDoc { strip_tabs: false }),
            ("<>", RedirOp::ReadWrite),
            ("<&", RedirOp::DupIn),
            (">>", RedirOp::Append),
            (">&", RedirOp::DupOut),
            (">|", RedirOp::Clobber),
            ("&>>", RedirOp::AppendOutErr),
            ("&>", RedirOp::OutErr),
            ("<", RedirOp::In),
            (">", RedirOp::Out),
        ];
        if self.starts_with("<(") || self.starts_with(">(") {
            self.pos = start;
            return Ok(None);
        }
        let Some(&(text, op)) = ops
            .iter()
            .find(|(text, _)| self.starts_with(text) && !(fd.is_some() && text.starts_with('&')))
        else {
            self.pos = start;
            return Ok(None);
        };
        self.pos += text.len();
        self.skip_blanks();
        let word = self.word()?;
        if word.parts.is_empty() {
            return Err(self.unexpected());
        }
        let target = match op {
            RedirOp::HereDoc { strip_tabs } => {
                RedirTarget::HereDoc(self.register_heredoc(&word, strip_tabs)?)
            }
            _ => RedirTarget::Word(word),
        };
        Ok(Some(Redirect { fd, op, target }))
    }
}
