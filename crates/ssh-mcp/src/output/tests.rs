use super::*;

#[test]
fn output_within_the_cap_is_returned_whole() {
    let mut c = StreamCapture::new(1000, 50);
    c.push(b"hello ");
    c.push(b"world");
    assert_eq!(
        c.render(100, Stream::Stdout, Some("out-1")),
        ("hello world".to_owned(), false)
    );
}

#[test]
fn output_over_the_cap_keeps_head_and_tail_with_a_marker_naming_the_output() {
    let mut c = StreamCapture::new(10_000, 50);
    for i in 0..1000 {
        c.push(format!("{i:04}\n").as_bytes());
    }
    let (text, cut) = c.render(100, Stream::Stdout, Some("out-7"));
    assert!(cut);
    assert!(text.starts_with("0000\n0001\n"), "{text}");
    assert!(text.ends_with("0998\n0999\n"), "{text}");
    assert!(
        text.contains("4900 bytes of stdout omitted, 5000 bytes in all"),
        "{text}"
    );
    assert!(text.contains("outputId \"out-7\""), "{text}");
}

#[test]
fn a_cut_never_splits_a_utf8_character() {
    let mut c = StreamCapture::new(10_000, 1000);
    c.push("é".repeat(500).as_bytes());
    let (text, cut) = c.render(101, Stream::Stderr, None);
    assert!(cut);
    assert!(!text.contains('\u{FFFD}'), "{text}");
}

#[test]
fn stored_output_is_paged_until_eof() {
    let store = OutputStore::new(4, 1 << 20);
    let id = store.next_id();
    let body: Vec<u8> = (0..250u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    store.insert(
        id.clone(),
        StoredOutput {
            stdout: body.clone(),
            stderr: vec![],
            stdout_total: body.len() as u64,
            stderr_total: 0,
        },
    );
    let mut offset = 0;
    let mut all = String::new();
    loop {
        let page = store.read(&id, Stream::Stdout, offset, 100).unwrap();
        all.push_str(&page.text);
        offset = page.next_offset;
        if page.eof {
            break;
        }
    }
    assert_eq!(all.as_bytes(), &body[..]);
}

#[test]
fn the_oldest_outputs_are_dropped_first() {
    let store = OutputStore::new(2, 1 << 20);
    for _ in 0..3 {
        let id = store.next_id();
        store.insert(
            id,
            StoredOutput {
                stdout: b"x".to_vec(),
                stderr: vec![],
                stdout_total: 1,
                stderr_total: 0,
            },
        );
    }
    assert!(matches!(
        store.read("out-1", Stream::Stdout, 0, 10),
        Err(OutputError::Unknown(_))
    ));
    assert!(store.read("out-3", Stream::Stdout, 0, 10).is_ok());
}
