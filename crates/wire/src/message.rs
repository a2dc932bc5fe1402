use serde_json::value::RawValue;

use crate::{ErrorCode, Id, Limits, RawObject, WireError, raw, raw_string, strict, validate};

/// The three kinds of JSON-RPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: expects a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `result` or `error`, and the `id` of the request it answers.
    Response,
}

/// One JSON-RPC message. The envelope is parsed; `params`, `result` and `error` stay raw until
/// asked for, and are written back exactly as they came unless changed.
#[derive(Debug, Clone)]
pub struct Message {
    kind: Kind,
    id: Option<Id>,
    method: Option<String>,
    body: RawObject,
}

impl Message {
    /// Parses one message strictly: one JSON object, JSON-RPC 2.0, no duplicate keys, within
    /// `limits`. A batch (an array) is refused: MCP removed batches, and a batch would let a
    /// `tools/call` hide among other messages.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Message, WireError> {
        // The common case takes one structural pass and the parse below; anything the
        // structural pass cannot vouch for gets the full check first, as does a message that
        // then fails to parse (for the full check's precise error).
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let plain = bytes.len() <= limits.max_bytes
            && first == Some(&b'{')
            && strict::plainly_strict(bytes, limits.max_depth);
        if !plain {
            validate(bytes, limits)?;
        }
        let precise = |fallback: String| match validate(bytes, limits) {
            Err(e) => e,
            Ok(()) => WireError::new(ErrorCode::Parse, fallback),
        };
        one_object(first)?;
        let text = std::str::from_utf8(bytes).map_err(|_| precise("invalid UTF-8".into()))?;
        let body = RawObject::parse(text).map_err(|e| precise(e.to_string()))?;
        Message::from_object(body)
    }

    /// Classifies an object as a message.
    pub fn from_object(body: RawObject) -> Result<Message, WireError> {
        let raw_id = body.get("id").filter(|v| v.get() != "null");
        let id = raw_id.and_then(Id::from_raw);
        let invalid = |msg: &str, id: Option<Id>| WireError {
            code: ErrorCode::InvalidRequest,
            message: msg.to_owned(),
            id,
        };
        if body.get_str("jsonrpc").as_deref() != Some("2.0") {
            return Err(invalid("\"jsonrpc\" must be \"2.0\"", id));
        }
        let method = match body.get("method") {
            Some(m) => Some(
                serde_json::from_str::<String>(m.get())
                    .map_err(|_| invalid("\"method\" must be a string", id.clone()))?,
            ),
            None => None,
        };
        let kind = match (&method, raw_id) {
            (Some(_), None) if body.contains("id") => {
                return Err(invalid("a request id must not be null", None));
            }
            (Some(_), None) => Kind::Notification,
            (Some(_), Some(_)) => Kind::Request,
            (None, _) => {
                let has_result = body.contains("result");
                let has_error = body.contains("error");
                if has_result == has_error {
                    return Err(invalid(
                        "a message needs \"method\", or exactly one of \"result\" and \"error\"",
                        id,
                    ));
                }
                Kind::Response
            }
        };
        if raw_id.is_some() && id.is_none() {
            return Err(invalid("an id must be a string or an integer", None));
        }
        if kind == Kind::Response && id.is_none() && !body.contains("error") {
            return Err(invalid("a response needs an id", None));
        }
        Ok(Message {
            kind,
            id,
            method,
            body,
        })
    }

    /// A request.
    pub fn request(id: Id, method: &str, params: Option<&RawValue>) -> Message {
        let mut body = envelope();
        body.set("id", id.as_raw().to_owned());
        body.set_value("method", method);
        if let Some(p) = params {
            body.set("params", p.to_owned());
        }
        Message {
            kind: Kind::Request,
            id: Some(id),
            method: Some(method.to_owned()),
            body,
        }
    }

    /// A notification.
    pub fn notification(method: &str, params: Option<&RawValue>) -> Message {
        let mut body = envelope();
        body.set_value("method", method);
        if let Some(p) = params {
            body.set("params", p.to_owned());
        }
        Message {
            kind: Kind::Notification,
            id: None,
            method: Some(method.to_owned()),
            body,
        }
    }

    /// A successful response.
    pub fn response(id: Id, result: Box<RawValue>) -> Message {
        let mut body = envelope();
        body.set("id", id.as_raw().to_owned());
        body.set("result", result);
        Message {
            kind: Kind::Response,
            id: Some(id),
            method: None,
            body,
        }
    }

    /// An error response. `id` is `None` only when the request's id could not be read.
    pub fn error(id: Option<Id>, code: i64, message: &str) -> Message {
        let mut body = envelope();
        body.set(
            "id",
            id.as_ref()
                .map_or_else(|| raw(&()), |i| i.as_raw().to_owned()),
        );
        let mut error = RawObject::new();
        error.set_value("code", &code);
        error.set_value("message", message);
        body.set("error", error.to_raw());
        Message {
            kind: Kind::Response,
            id,
            method: None,
            body,
        }
    }

    /// The error response for a refused message.
    pub fn from_wire_error(err: &WireError) -> Message {
        Message::error(err.id.clone(), err.code.code(), &err.message)
    }

    /// What kind of message this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// Whether this is a response carrying an error.
    pub fn is_error(&self) -> bool {
        self.kind == Kind::Response && self.body.contains("error")
    }

    /// The raw `params`.
    pub fn params_raw(&self) -> Option<&RawValue> {
        self.body.get("params")
    }

    /// `params` as an object. A missing `params` is an empty object; a non-object is an error.
    pub fn params(&self) -> Result<RawObject, WireError> {
        match self.params_raw() {
            None => Ok(RawObject::new()),
            Some(p) => RawObject::from_raw(p).map_err(|_| WireError {
                code: ErrorCode::InvalidParams,
                message: "\"params\" must be an object".into(),
                id: self.id.clone(),
            }),
        }
    }

    /// Replaces `params`.
    pub fn set_params(&mut self, params: &RawObject) {
        self.body.set("params", params.to_raw());
    }

    /// The raw `result` of a response.
    pub fn result_raw(&self) -> Option<&RawValue> {
        self.body.get("result")
    }

    /// `result` as an object, if it is one.
    pub fn result(&self) -> Option<RawObject> {
        self.body.get_object("result")
    }

    /// Replaces `result`.
    pub fn set_result(&mut self, result: &RawObject) {
        self.body.set("result", result.to_raw());
    }

    /// The raw `error` of a response.
    pub fn error_raw(&self) -> Option<&RawValue> {
        self.body.get("error")
    }

    /// Replaces the id (requests and responses), as a relay does when it maps ids.
    pub fn set_id(&mut self, id: Id) {
        self.body.set("id", id.as_raw().to_owned());
        self.id = Some(id);
    }

    /// `params._meta.progressToken`, raw, if present.
    pub fn progress_token(&self) -> Option<Box<RawValue>> {
        // Most requests carry none: a scan of the raw text spares parsing them.
        if !self.params_raw()?.get().contains("progressToken") {
            return None;
        }
        let meta = self.params().ok()?.get_object("_meta")?;
        meta.get("progressToken").map(|t| t.to_owned())
    }

    /// Sets `params._meta.progressToken`, keeping every other member of `params` and `_meta`.
    pub fn set_progress_token(&mut self, token: Box<RawValue>) {
        let Ok(mut params) = self.params() else {
            return;
        };
        let mut meta = params.get_object("_meta").unwrap_or_default();
        meta.set("progressToken", token);
        params.set("_meta", meta.to_raw());
        self.set_params(&params);
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        self.body.to_json()
    }

    /// The message as one line (for stdio): JSON whitespace newlines, which a pretty-printing
    /// peer may have sent, become spaces (inside strings newlines are always escaped).
    pub fn to_line(&self) -> String {
        // Room for the newline too: no reallocation for the last byte.
        let mut json = String::with_capacity(self.body.text_len() + 1);
        self.body.write_to(&mut json);
        if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
            json = json.replace(['\n', '\r'], " ");
        }
        json.push('\n');
        json
    }
}

/// Refuses what is not one JSON object, judged by its first non-blank byte: a batch (an
/// array), or any other value.
fn one_object(first: Option<&u8>) -> Result<(), WireError> {
    match first {
        Some(b'{') => Ok(()),
        Some(b'[') => Err(WireError::new(
            ErrorCode::InvalidRequest,
            "JSON-RPC batches are not supported (removed from MCP in 2025-06-18)",
        )),
        _ => Err(WireError::new(
            ErrorCode::InvalidRequest,
            "a message must be a JSON object",
        )),
    }
}

fn envelope() -> RawObject {
    let mut body = RawObject::new();
    body.set("jsonrpc", raw_string("2.0"));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, WireError> {
        Message::parse(text.as_bytes(), &Limits::default())
    }

    /// What `parse` answered before it had a fast path: the full check, then the parse.
    fn parse_slowly(bytes: &[u8], limits: &Limits) -> Result<Message, WireError> {
        validate(bytes, limits)?;
        one_object(bytes.iter().find(|b| !b.is_ascii_whitespace()))?;
        let body = RawObject::parse(std::str::from_utf8(bytes).unwrap())
            .map_err(|e| WireError::new(ErrorCode::Parse, e.to_string()))?;
        Message::from_object(body)
    }

    #[test]
    fn the_fast_path_answers_as_the_full_check_does() {
        let cases: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[1,{"y":"}"}]}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"a":2}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a" 1}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":tru}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"a":tru}}"#,
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"a\":\"\xff\"}}",
            br#"{"jsonrpc":"2.0","method":"m"} {}"#,
            br#"{"jsonrpc":"2.0","method":"m"}]"#,
            br#"{"jsonrpc":"2.0","method":"m","params":{"k":"v\"}"}}"#,
            br#"  {"jsonrpc":"2.0","method":"m","params":[[[[[[1]]]]]]}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"m","id":8}"#,
            br#"{"jsonrpc":"2.0","id":7,"result":{"k":1,"k\u0000":2}}"#,
        ];
        let shallow = Limits {
            max_bytes: 1 << 20,
            max_depth: 4,
        };
        for text in cases {
            for limits in [Limits::default(), shallow] {
                let fast = Message::parse(text, &limits).map(|m| m.to_json());
                let slow = parse_slowly(text, &limits).map(|m| m.to_json());
                match (&fast, &slow) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b),
                    (Err(a), Err(b)) => {
                        assert_eq!((a.code, &a.message), (b.code, &b.message), "{text:?}")
                    }
                    _ => panic!(
                        "{:?}: fast {fast:?}, full {slow:?}",
                        String::from_utf8_lossy(text)
                    ),
                }
            }
        }
    }

    /// Pieces of JSON (and of broken JSON) that the structural fast path has to judge:
    /// repeated and escaped keys, strings holding brackets and quotes, deep nesting.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\"a\"",
        "\"b\"",
        "\"a\\u0000\"",
        "\"\\\"\"",
        "\"}\"",
        "\"]\"",
        "\"\\\\\"",
        "1",
        "-2.5e3",
        "true",
        "null",
        "\"jsonrpc\"",
        "\"2.0\"",
        "\"id\"",
        "\"method\"",
        "\"m\"",
        "\"params\"",
        "\"result\"",
        "\"\\",
    ];

    /// Member names for generated objects: few, so that duplicates are common, and one that
    /// is `"a"` written with an escape (a duplicate only a decoder sees).
    const KEYS: &[&str] = &["\"a\"", "\"b\"", "\"c\"", "\"\\u0061\"", "\"a\\u0000\""];

    /// JSON texts: nested objects and arrays of a few leaves, with repeated keys.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = proptest::sample::select(
            &["1", "true", "null", "\"x\"", "\"}\"", "\"\\\"]\"", "-0.5"][..],
        )
        .prop_map(String::from);
        leaf.prop_recursive(8, 64, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..5).prop_map(
                    |members| {
                        let members: Vec<String> =
                            members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        format!("{{{}}}", members.join(","))
                    }
                ),
            ]
        })
    }

    /// Both parses of `text` answer alike: the same message, or the same error.
    fn same_answer(
        text: &str,
        limits: &Limits,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let fast = Message::parse(text.as_bytes(), limits).map(|m| m.to_json());
        let slow = parse_slowly(text.as_bytes(), limits).map(|m| m.to_json());
        match (&fast, &slow) {
            (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
            (Err(a), Err(b)) => {
                proptest::prop_assert_eq!((a.code, &a.message), (b.code, &b.message))
            }
            _ => proptest::prop_assert!(false, "{text:?}: fast {fast:?}, full {slow:?}"),
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Well-formed messages whose params repeat keys at any depth, some of them cut or
        /// with a byte inserted.
        #[test]
        fn the_fast_path_agrees_with_the_full_check_on_generated_objects(
            params in json_text(),
            damage in proptest::option::of((proptest::num::usize::ANY, proptest::sample::select(PIECES))),
            depth in 2usize..10,
        ) {
            let mut text = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{params}}}"#);
            if let Some((at, piece)) = damage {
                let at = at % (text.len() + 1);
                if at % 2 == 0 {
                    text.insert_str(at, piece);
                } else {
                    text.truncate(at);
                }
            }
            same_answer(&text, &Limits { max_bytes: 1 << 20, max_depth: depth })?;
        }

        /// The fast path (a hand-written scan) may only send a message on to the parse when
        /// the full check would have passed it: a duplicate key it missed would let a policy
        /// read one `name` while the upstream runs another.
        #[test]
        fn the_fast_path_agrees_with_the_full_check_on_generated_messages(
            envelope in proptest::bool::ANY,
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..48),
            depth in 2usize..8,
        ) {
            let mut text = String::new();
            if envelope {
                text.push_str(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":"#);
            }
            text.extend(pieces);
            same_answer(&text, &Limits { max_bytes: 1 << 20, max_depth: depth })?;
        }
    }

    #[test]
    fn a_request_keeps_unknown_fields_byte_for_byte_when_its_id_changes() {
        let text = r#"{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"x","arguments":{"n":1.0e2},"x-extra":[1, 2]}}"#;
        let mut msg = parse(text).unwrap();
        assert_eq!(msg.kind(), Kind::Request);
        assert_eq!(msg.method(), Some("tools/call"));
        msg.set_id(Id::number(7));
        assert_eq!(
            msg.to_json(),
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"n":1.0e2},"x-extra":[1, 2]}}"#
        );
    }

    #[test]
    fn batches_are_refused() {
        let err = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains("batch"));
    }

    #[test]
    fn odd_ids_are_refused() {
        for id in ["null", "{}", "[1]", "true", "1.5"] {
            let err =
                parse(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "id {id}");
        }
    }

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .unwrap()
                .kind(),
            Kind::Notification
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#)
                .unwrap()
                .kind(),
            Kind::Response
        );
        assert!(parse(r#"{"jsonrpc":"2.0","id":3}"#).is_err());
        assert!(parse(r#"{"jsonrpc":"1.0","id":3,"method":"x"}"#).is_err());
    }

    #[test]
    fn progress_token_is_rewritten_inside_meta_only() {
        let mut msg = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":"abc","k":1}}}"#).unwrap();
        assert_eq!(msg.progress_token().unwrap().get(), "\"abc\"");
        msg.set_progress_token(raw(&42));
        assert_eq!(
            msg.to_json(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":42,"k":1}}}"#
        );
    }

    #[test]
    fn lines_never_hold_raw_newlines() {
        let msg = parse("{\"jsonrpc\":\"2.0\",\n\"id\":1,\"result\":{\"t\":\"a\\nb\"}}").unwrap();
        let line = msg.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains("a\\nb"));
    }
}
