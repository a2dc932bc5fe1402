use crate::ast::*;
use crate::{ParseError, parse};

fn words(text: &str) -> Vec<Option<String>> {
    let script = parse(text).expect("parses");
    let Command::Simple(sc) = &script.items[0].and_or.first.commands[0] else {
        panic!("not a simple command: {script:?}");
    };
    sc.words.iter().map(static_word).collect()
}

/// The static value of `text` as an argument word.
fn one(text: &str) -> Option<String> {
    words(&format!("echo {text}")).remove(1)
}

#[test]
fn quoting_is_decoded_like_the_shell() {
    for text in [
        "rm",
        "r''m",
        "r\"\"m",
        "\"rm\"",
        "'rm'",
        "\\rm",
        "r\\m",
        "$'rm'",
        "$'\\x72m'",
        "\"r\"'m'",
        "r\\\nm",
        "$'\\162m'",
        "$'\\u0072m'",
        "$'rm\\0zzz'",
        "$\"rm\"",
    ] {
        assert_eq!(one(text).as_deref(), Some("rm"), "{text:?}");
    }
    assert_eq!(
        words("echo 'a;b|c' \"x y\" z\\ w"),
        vec![
            Some("echo".into()),
            Some("a;b|c".into()),
            Some("x y".into()),
            Some("z w".into())
        ]
    );
    assert_eq!(one("\"a\\\"b\\$c\\d\"").as_deref(), Some("a\"b$c\\d"));
    assert_eq!(one("$'a\\'b\\tc'").as_deref(), Some("a'b\tc"));
}

#[test]
fn dynamic_words_have_no_static_value() {
    for text in [
        "$x",
        "${x:-rm}",
        "$(echo rm)",
        "`echo rm`",
        "r?m",
        "r*",
        "r[m]m",
        "{rm,x}",
        "{1..3}",
        "~$x",
        "$=x",
        "\"$x\"",
        "$((1+2))",
        "<(ls)",
        "r[\"m\"]",
        "r[\\m]",
        "r'x'[m]",
    ] {
        assert_eq!(one(text), None, "{text:?}");
    }
    for text in [
        "[", "{}", "a,b", "~/bin/rm", "x=1", "r[m\"]\"", "\"r[\"m]", "r\\[m]", "a]b[c",
    ] {
        assert!(one(text).is_some(), "{text:?}");
    }
}

#[test]
fn lists_pipelines_and_separators() {
    let script = parse("a; b && c || d | e |& f & g\nh").expect("parses");
    assert_eq!(script.items.len(), 4);
    assert!(script.items[1].background);
    let ao = &script.items[1].and_or;
    assert_eq!(ao.rest.len(), 2);
    assert_eq!(ao.rest[1].1.commands.len(), 3);
    let script = parse("! time -p ls").expect("parses");
    let p = &script.items[0].and_or.first;
    assert!(p.negated && p.timed);
    assert!(parse("ls # comment ; rm x").expect("parses").items.len() == 1);
    assert!(parse("").expect("parses").items.is_empty());
}

fn compound(text: &str) -> Compound {
    match parse(text)
        .expect("parses")
        .items
        .remove(0)
        .and_or
        .first
        .commands
        .remove(0)
    {
        Command::Compound(c, _) => c,
        other => panic!("not compound: {other:?}"),
    }
}

#[test]
fn compound_commands() {
    assert!(matches!(compound("{ rm x; }"), Compound::Brace(_)));
    assert!(matches!(compound("(rm x)"), Compound::Subshell(_)));
    assert!(matches!(
        compound("if a; then b; elif c; then d; else e; fi"),
        Compound::If { ref branches, otherwise: Some(_) } if branches.len() == 2
    ));
    assert!(matches!(
        compound("for f in *.log; do cat \"$f\"; done"),
        Compound::For { ref var, words: Some(ref w), select: false, .. } if var == "f" && w.len() == 1
    ));
    assert!(matches!(
        compound("for f\ndo x; done"),
        Compound::For { words: None, .. }
    ));
    assert!(matches!(
        compound("select x in a b; do x; done"),
        Compound::For { select: true, .. }
    ));
    assert!(matches!(
        compound("for ((i=0; i<3; i++)); do x; done"),
        Compound::ArithFor { .. }
    ));
    assert!(matches!(
        compound("while true; do x; done"),
        Compound::While { until: false, .. }
    ));
    assert!(matches!(
        compound("until a\ndo\nb\ndone"),
        Compound::While { until: true, .. }
    ));
    match compound("case $x in a|b) x;; (c) y;& *) z;;& esac") {
        Compound::Case { arms, .. } => {
            assert_eq!(arms.len(), 3);
            assert_eq!(arms[0].patterns.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(compound("case x in esac"), Compound::Case { ref arms, .. } if arms.is_empty())
    );
    assert!(matches!(compound("(( x > 1 ))"), Compound::Arith(_)));
    assert!(matches!(compound("((ls) )"), Compound::Subshell(_)));
    match compound("[[ -f x && $a =~ ^(a|b)$ || x < y ]]") {
        Compound::Cond(tokens) => assert_eq!(tokens.len(), 10),
        other => panic!("{other:?}"),
    }
}

#[test]
fn functions_and_coproc() {
    for text in [
        "f() { rm x; }",
        "f () ( rm x )",
        "function f { rm x; }",
        "function f() { rm x; }",
    ] {
        let script = parse(text).expect("parses");
        assert!(
            matches!(&script.items[0].and_or.first.commands[0], Command::Function(d) if d.name == "f"),
            "{text}"
        );
    }
    assert!(matches!(
        parse("coproc cat x").expect("parses").items[0]
            .and_or
            .first
            .commands[0],
        Command::Coproc(..)
    ));
    assert!(matches!(
        parse("coproc NAME { cat x; }").expect("parses").items[0]
            .and_or
            .first
            .commands[0],
        Command::Coproc(..)
    ));
}

#[test]
fn assignments_and_redirections() {
    let script = parse("X=1 Y+=2 A[1]=3 B=(a \"b c\" $(d)) cmd 2>&1 >f <<<s &>/dev/null {fd}>x")
        .expect("parses");
    let Command::Simple(sc) = &script.items[0].and_or.first.commands[0] else {
        panic!()
    };
    assert_eq!(sc.assignments.len(), 4);
    assert!(sc.assignments[1].append);
    assert!(sc.assignments[2].subscript.is_some());
    assert!(matches!(&sc.assignments[3].value.parts[0], WordPart::Array(w) if w.len() == 3));
    assert_eq!(sc.words.len(), 1);
    let ops: Vec<_> = sc.redirects.iter().map(|r| (r.fd.clone(), r.op)).collect();
    assert_eq!(
        ops,
        vec![
            (Some("2".into()), RedirOp::DupOut),
            (None, RedirOp::Out),
            (None, RedirOp::HereString),
            (None, RedirOp::OutErr),
            (Some("fd".into()), RedirOp::Out),
        ]
    );
    let script = parse("declare -a x=(1 2) y").expect("parses");
    let Command::Simple(sc) = &script.items[0].and_or.first.commands[0] else {
        panic!()
    };
    assert_eq!(sc.words.len(), 4);
    assert!(parse("echo x=(1)").is_err());
}

fn heredoc(text: &str) -> HereDoc {
    let script = parse(text).expect("parses");
    let Command::Simple(sc) = &script.items[0].and_or.first.commands[0] else {
        panic!()
    };
    match &sc.redirects[0].target {
        RedirTarget::HereDoc(doc) => doc.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn here_documents() {
    let doc = heredoc("cat <<EOF\nhello $x\nEOF\n");
    assert!(!doc.quoted);
    let WordPart::DoubleQuoted(parts) = &doc.body.parts[0] else {
        panic!()
    };
    assert!(parts.iter().any(|p| matches!(p, WordPart::Param(_))));

    let doc = heredoc("cat <<'EOF'\n$(rm x)\nEOF");
    assert!(doc.quoted);
    assert_eq!(doc.body.parts, vec![WordPart::Quoted("$(rm x)\n".into())]);

    let doc = heredoc("cat <<-\"E\"\n\tbody\n\tE\nls");
    assert_eq!(doc.body.parts, vec![WordPart::Quoted("body\n".into())]);

    let doc = heredoc("cat <<EOF\n$(rm x)\nEOF");
    let WordPart::DoubleQuoted(parts) = &doc.body.parts[0] else {
        panic!()
    };
    assert!(matches!(parts[0], WordPart::CommandSub(_)));

    // Two here-documents on one line, then more commands.
    let script = parse("cat <<A; cat <<B\na\nA\nb\nB\necho done").expect("parses");
    assert_eq!(script.items.len(), 3);
    // A here-document inside a substitution.
    assert!(parse("echo \"$(cat <<EOF\nx\nEOF\n)\"").is_ok());
    assert_eq!(
        parse("cat <<EOF\nx"),
        Err(ParseError::UnterminatedHeredoc("EOF".into()))
    );
    assert!(parse("echo $(cat <<EOF)\nx\nEOF").is_err());
}

#[test]
fn expansions() {
    let script = parse(
        "echo ${x:-$(rm a)} \"${y#'*'}\" $((1 + $(rm b))) `rm c` <(rm d) ${#z} ${!p} ${a[$(rm e)]}",
    )
    .expect("parses");
    let Command::Simple(sc) = &script.items[0].and_or.first.commands[0] else {
        panic!()
    };
    assert_eq!(sc.words.len(), 9);
    assert!(matches!(sc.words[3].parts[0], WordPart::Arith(_)));
    assert!(matches!(sc.words[4].parts[0], WordPart::CommandSub(_)));
    assert!(matches!(
        sc.words[5].parts[0],
        WordPart::ProcessSub { output: false, .. }
    ));
    let WordPart::Param(p) = &sc.words[6].parts[0] else {
        panic!()
    };
    assert!(p.length);
    let WordPart::Param(p) = &sc.words[7].parts[0] else {
        panic!()
    };
    assert!(p.indirect);
    // `$((` that is not arithmetic is a subshell inside a substitution, as in bash.
    let script = parse("echo $((rm x) )").expect("parses");
    let Command::Simple(sc) = &script.items[0].and_or.first.commands[0] else {
        panic!()
    };
    assert!(matches!(sc.words[1].parts[0], WordPart::CommandSub(_)));
}

#[test]
fn unparseable_input_is_an_error() {
    let cases: &[(&str, ParseError)] = &[
        ("echo 'abc", ParseError::UnterminatedSingleQuote),
        ("echo \"abc", ParseError::UnterminatedDoubleQuote),
        ("echo `abc", ParseError::UnterminatedBackquote),
        ("echo $(ls", ParseError::UnterminatedSubstitution),
        ("echo ${x", ParseError::UnterminatedParameter),
        ("echo \0", ParseError::NulByte),
    ];
    for (text, err) in cases {
        assert_eq!(parse(text).as_ref().err(), Some(err), "{text:?}");
    }
    for text in [
        "(ls",
        "ls)",
        "if true; then ls",
        "{ ls",
        "for x in a; do ls",
        "case x in a) ls",
        "ls &&",
        "| ls",
        "ls ||",
        "$(",
        "fi",
        "done",
        "{ }",
        "echo ${",
        "echo ${ rm x; }",
        "echo ${(e)x}",
        "ls *(e:'rm x':)",
        "ls !(x)",
        "echo $(( 'a' ))",
        ";;",
        "ls ;;",
        "echo $((1+2",
        "echo $[1",
    ] {
        assert!(parse(text).is_err(), "{text:?} parsed");
    }
    assert_eq!(
        parse(&"x".repeat(crate::MAX_INPUT + 1)),
        Err(ParseError::TooLong)
    );
    assert_eq!(parse(&"(".repeat(40)), Err(ParseError::TooDeep));
    assert_eq!(parse(&"$(".repeat(40)), Err(ParseError::TooDeep));
}
