use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::*;

#[test]
fn keys_encode_as_xterm_sends_them() {
    let k = |name: &str| encode_key(name, false).unwrap();
    assert_eq!(k("enter"), b"\r");
    assert_eq!(k("Return"), b"\r");
    assert_eq!(k("tab"), b"\t");
    assert_eq!(k("shift-tab"), b"\x1b[Z");
    assert_eq!(k("esc"), b"\x1b");
    assert_eq!(k("ESCAPE"), b"\x1b");
    assert_eq!(k("backspace"), b"\x7f");
    assert_eq!(k("delete"), b"\x1b[3~");
    assert_eq!(k("up"), b"\x1b[A");
    assert_eq!(k("down"), b"\x1b[B");
    assert_eq!(k("right"), b"\x1b[C");
    assert_eq!(k("left"), b"\x1b[D");
    assert_eq!(k("home"), b"\x1b[H");
    assert_eq!(k("end"), b"\x1b[F");
    assert_eq!(k("pgup"), b"\x1b[5~");
    assert_eq!(k("PageDown"), b"\x1b[6~");
    assert_eq!(k("f1"), b"\x1bOP");
    assert_eq!(k("f4"), b"\x1bOS");
    assert_eq!(k("f5"), b"\x1b[15~");
    assert_eq!(k("f10"), b"\x1b[21~");
    assert_eq!(k("f12"), b"\x1b[24~");
    assert_eq!(k("space"), b" ");
    assert_eq!(k("alt-x"), b"\x1bx");
    assert_eq!(k("alt-X"), b"\x1bX");
}

#[test]
fn control_keys_cover_a_to_z_and_the_punctuation_ones() {
    for (i, c) in ('a'..='z').enumerate() {
        let expected = vec![i as u8 + 1];
        for spelling in [
            format!("ctrl-{c}"),
            format!("Ctrl+{}", c.to_ascii_uppercase()),
            format!("C-{c}"),
            format!("^{}", c.to_ascii_uppercase()),
        ] {
            assert_eq!(
                encode_key(&spelling, false).unwrap(),
                expected,
                "{spelling}"
            );
        }
    }
    assert_eq!(encode_key("ctrl-c", false).unwrap(), [3]);
    assert_eq!(encode_key("ctrl-[", false).unwrap(), [0x1b]);
    assert_eq!(encode_key("ctrl-\\", false).unwrap(), [0x1c]);
    assert_eq!(encode_key("ctrl-@", false).unwrap(), [0]);
}

#[test]
fn application_cursor_mode_changes_arrows_home_and_end() {
    let k = |name: &str| encode_key(name, true).unwrap();
    assert_eq!(k("up"), b"\x1bOA");
    assert_eq!(k("left"), b"\x1bOD");
    assert_eq!(k("home"), b"\x1bOH");
    assert_eq!(k("end"), b"\x1bOF");
    // Keys outside DECCKM do not change.
    assert_eq!(k("pgup"), b"\x1b[5~");
    assert_eq!(k("f1"), b"\x1bOP");
}

#[test]
fn unknown_keys_are_refused_with_the_list() {
    for bad in ["", "ctrl-", "ctrl-ab", "f13", "hyper-x", "enterr", "alt-"] {
        let e = encode_key(bad, false).unwrap_err();
        assert!(e.to_string().contains("known keys"), "{bad}: {e}");
    }
}

#[test]
fn the_screen_renders_text_cursor_and_trims() {
    let mut t = Term::new(20, 5, 100, 1 << 20);
    t.process(b"hello\r\nworld   \x1b[31mred\x1b[0m");
    let s = t.snapshot();
    assert_eq!(s.lines, vec!["hello", "world   red"]);
    assert_eq!((s.cursor_row, s.cursor_col), (1, 11));
    assert_eq!((s.cols, s.rows), (20, 5));
    assert!(!s.alternate_screen);
    // Cursor addressing overwrites in place, as a terminal does.
    t.process(b"\x1b[1;1HJ");
    assert_eq!(t.screen_lines()[0], "Jello");
}

#[test]
fn the_alternate_screen_and_the_title_are_reported() {
    let mut t = Term::new(40, 10, 100, 1 << 20);
    t.process(b"$ vim\r\n");
    t.process(b"\x1b]2;file.txt - VIM\x07\x1b[?1049h\x1b[H\x1b[2J~\r\n~\r\n\x1b[10;1H-- INSERT --");
    let s = t.snapshot();
    assert!(s.alternate_screen);
    assert_eq!(s.title, "file.txt - VIM");
    assert_eq!(s.lines.last().unwrap(), "-- INSERT --");
    assert_eq!(s.lines[0], "~");
    t.process(b"\x1b[?1049l");
    let s = t.snapshot();
    assert!(!s.alternate_screen);
    assert_eq!(s.lines, vec!["$ vim"]);
}

#[test]
fn vim_style_application_cursor_is_seen() {
    let mut t = Term::new(40, 10, 0, 1 << 20);
    assert!(!t.application_cursor());
    t.process(b"\x1b[?1h");
    assert!(t.application_cursor());
}

#[test]
fn resize_changes_the_screen_size() {
    let mut t = Term::new(80, 24, 10, 1 << 20);
    t.resize(100, 30);
    assert_eq!(t.size(), (100, 30));
    let s = t.snapshot();
    assert_eq!((s.cols, s.rows), (100, 30));
    // Out-of-range sizes are clamped rather than panicking.
    t.resize(0, 5000);
    assert_eq!(t.size(), (MIN_SIZE, MAX_SIZE));
}

#[test]
fn the_transcript_holds_scrolled_lines_then_the_screen() {
    let mut t = Term::new(10, 3, 100, 1 << 20);
    for i in 1..=10 {
        t.process(format!("line{i}\r\n").as_bytes());
    }
    let lines = t.transcript();
    let expected: Vec<String> = (1..=10).map(|i| format!("line{i}")).collect();
    assert_eq!(lines, expected);
    // Reading the transcript leaves the live screen in view.
    assert_eq!(t.screen_lines(), vec!["line9", "line10"]);
}

#[test]
fn scrollback_is_bounded() {
    let mut t = Term::new(10, 2, 5, 1 << 20);
    for i in 1..=20 {
        t.process(format!("l{i}\r\n").as_bytes());
    }
    let lines = t.transcript();
    assert_eq!(lines.first().unwrap(), "l15");
    assert_eq!(lines.last().unwrap(), "l20");
}

#[test]
fn new_output_is_stripped_and_consumed_once() {
    let mut t = Term::new(80, 24, 10, 1 << 20);
    t.process(b"\x1b[1;32muser@host\x1b[0m:~$ ls\r\n");
    t.process(b"a  b\r\n\x1b]0;title\x07");
    let (peek, _) = t.take_new(false);
    assert_eq!(peek, "user@host:~$ ls\na  b\n");
    let (text, dropped) = t.take_new(true);
    assert_eq!((text.as_str(), dropped), ("user@host:~$ ls\na  b\n", 0));
    assert_eq!(t.take_new(true).0, "");
    t.process(b"more");
    assert_eq!(t.take_new(true).0, "more");
}

#[test]
fn stripping_handles_carriage_returns_and_backspace() {
    assert_eq!(strip(b"10%\r50%\r100%\r\ndone\r\n"), "100%\ndone\n");
    assert_eq!(strip(b"abc\x08\x08x\r\n"), "ax\n");
    assert_eq!(strip(b"tab\there"), "tab\there");
    assert_eq!(strip(b"\x1b[?2004hprompt\x1b[K$ "), "prompt$ ");
}

#[test]
fn unread_output_is_capped_and_the_drop_is_counted() {
    let mut t = Term::new(80, 24, 10, 1024);
    for i in 0..200 {
        t.process(format!("line {i:04}\r\n").as_bytes());
    }
    let (text, dropped) = t.take_new(true);
    assert!(text.len() <= 1024, "{}", text.len());
    assert!(dropped > 0);
    assert!(text.ends_with("line 0199\n"));
}

fn shared(cols: u16, rows: u16) -> Arc<SharedTerm> {
    Arc::new(SharedTerm::new(Term::new(cols, rows, 100, 1 << 20)))
}

/// Feeds `chunks` with a pause before each.
fn feed(term: Arc<SharedTerm>, chunks: Vec<(u64, &'static [u8])>) {
    tokio::spawn(async move {
        for (ms, bytes) in chunks {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            term.process(bytes);
        }
    });
}

#[tokio::test(start_paused = true)]
async fn waiting_for_quiet_ends_after_the_last_output() {
    let t = shared(40, 10);
    feed(t.clone(), vec![(50, b"a"), (100, b"b"), (100, b"c")]);
    let spec = WaitSpec {
        quiet: Some(Duration::from_millis(300)),
        max: Duration::from_secs(10),
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!(out.reason, WaitEnd::Quiet);
    // Last output at 250 ms, then 300 ms of quiet.
    assert!((540..=560).contains(&out.waited_ms), "{out:?}");
    assert_eq!(t.with(|t| t.screen_text()), "abc");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_quiet_is_capped_by_the_maximum() {
    let t = shared(40, 10);
    let chunks: Vec<(u64, &'static [u8])> = (0..100).map(|_| (100, &b"x"[..])).collect();
    feed(t.clone(), chunks);
    let spec = WaitSpec {
        quiet: Some(Duration::from_millis(500)),
        max: Duration::from_millis(2000),
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!(out.reason, WaitEnd::Timeout);
    assert_eq!(out.waited_ms, 2000);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_regex_ends_when_it_shows() {
    let t = shared(40, 10);
    t.process(b"$ ");
    feed(
        t.clone(),
        vec![
            (10, b"make\r\n"),
            (500, b"building...\r\n"),
            (700, b"BUILD OK\r\n$ "),
        ],
    );
    let spec = WaitSpec {
        regex: Some(Regex::new(r"(?m)^BUILD (OK|FAILED)$").unwrap()),
        max: Duration::from_secs(10),
        after_output: true,
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!(out.reason, WaitEnd::Matched);
    assert_eq!(out.matched.as_deref(), Some("BUILD OK"));
    assert_eq!(out.waited_ms, 1210);
}

#[tokio::test(start_paused = true)]
async fn an_old_prompt_does_not_end_a_wait_before_new_output() {
    let t = shared(40, 10);
    t.process(b"$ ");
    feed(t.clone(), vec![(300, b"sleep 1\r\n"), (1000, b"$ ")]);
    let spec = WaitSpec {
        regex: Some(Regex::new(r"\$ $").unwrap()),
        max: Duration::from_secs(10),
        after_output: true,
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!(out.reason, WaitEnd::Matched);
    assert_eq!(out.waited_ms, 1300, "{out:?}");
    // Without input sent, what is on the screen already counts.
    let spec = WaitSpec {
        after_output: false,
        ..spec
    };
    let out = wait(&t, &spec).await;
    assert_eq!((out.reason, out.waited_ms), (WaitEnd::Matched, 0));
}

#[tokio::test(start_paused = true)]
async fn a_regex_sees_text_that_scrolled_off_the_screen() {
    let t = shared(20, 3);
    feed(
        t.clone(),
        vec![(100, b"MARKER-42\r\n1\r\n2\r\n3\r\n4\r\n5\r\n")],
    );
    let spec = WaitSpec {
        regex: Some(Regex::new(r"MARKER-\d+").unwrap()),
        max: Duration::from_secs(5),
        after_output: true,
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!(out.reason, WaitEnd::Matched);
    assert_eq!(out.matched.as_deref(), Some("MARKER-42"));
    assert!(!t.with(|t| t.screen_text()).contains("MARKER"));
}

#[tokio::test(start_paused = true)]
async fn a_regex_that_never_shows_times_out_and_a_close_ends_the_wait() {
    let t = shared(40, 10);
    let spec = WaitSpec {
        regex: Some(Regex::new("never").unwrap()),
        max: Duration::from_millis(800),
        after_output: true,
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!((out.reason, out.waited_ms), (WaitEnd::Timeout, 800));

    let closer = t.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        closer.close("the shell exited");
    });
    let out = wait(&t, &spec).await;
    assert_eq!((out.reason, out.waited_ms), (WaitEnd::Closed, 200));
}

#[tokio::test(start_paused = true)]
async fn a_plain_wait_lasts_the_maximum() {
    let t = shared(40, 10);
    feed(t.clone(), vec![(100, b"x")]);
    let spec = WaitSpec {
        max: Duration::from_millis(700),
        ..Default::default()
    };
    let out = wait(&t, &spec).await;
    assert_eq!((out.reason, out.waited_ms), (WaitEnd::Timeout, 700));
}
