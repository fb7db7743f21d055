//! The JSON rendering (the default format). Schema: see the README, section `lb_status`.
//!
//! `render` writes a whole snapshot at once; `Stream` writes the same bytes a slice at a
//! time (`status::stream`), for `lb_status` (pretty, as `render`) and for `lb_api`'s lists
//! (compact, as `serde_json::to_vec` writes them).

use core::fmt;
use std::io;

use serde::Serialize;

use super::snapshot::{PeerSnapshot, Snapshot, SnapshotHead};
use super::stream::{Budget, Meter, Source, BATCH};

pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(s).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// `{"error": "..."}` for 400 and 404 answers: a message, or an error's Display.
pub fn error(msg: &(impl fmt::Display + ?Sized)) -> Vec<u8> {
    let msg = msg.to_string();
    let mut out = serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default();
    out.push(b'\n');
    out
}

/// What a streamed JSON document is.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `lb_status`: the whole document, pretty, as `render` writes it.
    Status(SnapshotHead),
    /// `lb_api`'s `GET upstreams`: every upstream of the source, a compact array.
    Upstreams,
    /// `lb_api`'s `GET upstreams/NAME`: the source's first upstream, compact.
    Upstream,
    /// `lb_api`'s `GET upstreams/NAME/peers`: the peers of the source's first upstream, a
    /// compact array.
    Peers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Upstream(usize),
    Peers { u: usize, i: usize, n: usize },
    UpstreamEnd(usize),
    Finish,
    Done,
}

/// A JSON rendering in progress.
pub struct Stream {
    shape: Shape,
    step: Step,
    scratch: Vec<PeerSnapshot>,
}

impl Stream {
    pub fn new(shape: Shape) -> Stream {
        Stream {
            shape,
            step: Step::Start,
            scratch: Vec::new(),
        }
    }

    fn pretty(&self) -> bool {
        matches!(self.shape, Shape::Status(_))
    }

    /// Nesting depth of the upstream objects.
    fn upstream_depth(&self) -> usize {
        match self.shape {
            Shape::Status(_) => 2,
            Shape::Upstreams => 1,
            Shape::Upstream | Shape::Peers => 0,
        }
    }

    /// Nesting depth of the peers array.
    fn peers_depth(&self) -> usize {
        match self.shape {
            Shape::Peers => 0,
            _ => self.upstream_depth() + 1,
        }
    }

    /// Whether the upstreams are the items of an array (at depth `upstream_depth() - 1`).
    fn listed(&self) -> bool {
        matches!(self.shape, Shape::Status(_) | Shape::Upstreams)
    }

    /// See `stream::Render::fill`.
    pub fn fill<S: Source + ?Sized>(&mut self, src: &S, out: &mut Vec<u8>, b: Budget) -> bool {
        let mut m = Meter::new(out, b);
        let pretty = self.pretty();
        let count = src.upstreams();
        while self.step != Step::Done && !m.spent(out) {
            self.step = match self.step {
                Step::Start => match &self.shape {
                    Shape::Status(head) => {
                        open_field(out, head, true, 0, "upstreams");
                        if open_array(out, count) {
                            Step::Upstream(0)
                        } else {
                            Step::Finish
                        }
                    }
                    Shape::Upstreams if open_array(out, count) => Step::Upstream(0),
                    Shape::Upstreams => Step::Finish,
                    Shape::Upstream if count == 0 => {
                        out.extend_from_slice(b"null");
                        Step::Finish
                    }
                    Shape::Upstream => Step::Upstream(0),
                    Shape::Peers if count == 0 => {
                        out.extend_from_slice(b"[]");
                        Step::Finish
                    }
                    Shape::Peers => {
                        let n = src.peer_count(0);
                        if open_array(out, n) {
                            Step::Peers { u: 0, i: 0, n }
                        } else {
                            Step::Finish
                        }
                    }
                },
                Step::Upstream(u) => {
                    let depth = self.upstream_depth();
                    if u > 0 {
                        out.push(b',');
                    }
                    if self.listed() {
                        newline(out, pretty, depth);
                    }
                    open_field(out, &src.head(u), pretty, depth, "peers");
                    let n = src.peer_count(u);
                    if open_array(out, n) {
                        Step::Peers { u, i: 0, n }
                    } else {
                        Step::UpstreamEnd(u)
                    }
                }
                Step::Peers { u, i, n } => {
                    let depth = self.peers_depth() + 1;
                    let k = m.take(n - i, BATCH);
                    src.peers(u, i..i + k, &mut self.scratch);
                    for (j, p) in self.scratch.iter().enumerate() {
                        if i + j > 0 {
                            out.push(b',');
                        }
                        newline(out, pretty, depth);
                        value(out, p, pretty, depth);
                    }
                    if i + k < n {
                        Step::Peers { u, i: i + k, n }
                    } else {
                        newline(out, pretty, depth - 1);
                        out.push(b']');
                        match self.shape {
                            Shape::Peers => Step::Finish,
                            _ => Step::UpstreamEnd(u),
                        }
                    }
                }
                Step::UpstreamEnd(u) => {
                    newline(out, pretty, self.upstream_depth());
                    out.push(b'}');
                    if self.listed() && u + 1 < count {
                        Step::Upstream(u + 1)
                    } else {
                        Step::Finish
                    }
                }
                Step::Finish => {
                    if self.listed() && count > 0 {
                        newline(out, pretty, self.upstream_depth() - 1);
                        out.push(b']');
                    }
                    if let Shape::Status(_) = self.shape {
                        newline(out, true, 0);
                        out.extend_from_slice(b"}\n");
                    }
                    Step::Done
                }
                Step::Done => Step::Done,
            };
        }
        self.step == Step::Done
    }
}

/// `[` for an array of `n` items (true: items follow), or `[]` when `n` is 0.
fn open_array(out: &mut Vec<u8>, n: usize) -> bool {
    if n == 0 {
        out.extend_from_slice(b"[]");
        false
    } else {
        out.push(b'[');
        true
    }
}

/// A newline and the indentation of `depth` (pretty only).
fn newline(out: &mut Vec<u8>, pretty: bool, depth: usize) {
    if pretty {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
}

/// `v` as serde_json writes it nested `depth` levels deep.
fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T, pretty: bool, depth: usize) {
    // Only a failing writer or a map with non-string keys can fail: neither occurs here.
    let _ = if pretty {
        let mut ser = serde_json::Serializer::with_formatter(&mut *out, Nested::at(depth));
        v.serialize(&mut ser)
    } else {
        serde_json::to_writer(&mut *out, v)
    };
}

/// Object `head` (whose fields are those of the full object before its last one) without its
/// closing brace, then the last field's key: what the full object is up to its last value.
fn open_field<T: Serialize>(out: &mut Vec<u8>, head: &T, pretty: bool, depth: usize, key: &str) {
    value(out, head, pretty, depth);
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    if pretty {
        while out.last() == Some(&b' ') {
            out.pop();
        }
        debug_assert_eq!(out.last(), Some(&b'\n'));
        out.pop();
    }
    out.push(b',');
    newline(out, pretty, depth + 1);
    value(out, key, pretty, depth + 1);
    out.extend_from_slice(if pretty { b": " } else { b":" });
}

/// serde_json's `PrettyFormatter` (two spaces per level) for a value nested `depth` levels
/// deep in a document: the same bytes as the whole document's pretty printing has there.
struct Nested {
    depth: usize,
    has_value: bool,
}

impl Nested {
    fn at(depth: usize) -> Nested {
        Nested {
            depth,
            has_value: false,
        }
    }

    fn indent<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        const SPACES: &[u8] = &[b' '; 64];
        let mut n = 2 * self.depth;
        while n > 0 {
            let k = n.min(SPACES.len());
            w.write_all(&SPACES[..k])?;
            n -= k;
        }
        Ok(())
    }

    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(c)
    }

    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        w.write_all(c)
    }

    fn item<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(w)
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::snapshot::tests::sample;

    #[test]
    fn round_trips_through_a_json_parser() {
        let out = render(&sample());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let u = &v["upstreams"][0];
        assert_eq!(u["name"], "back\"end\\1");
        assert_eq!(u["kind"], "http");
        assert_eq!(v["upstreams"][1]["kind"], "stream");
        let p = &u["peers"][1];
        assert_eq!(p["state"], "unhealthy");
        assert_eq!(p["responses"]["5xx"], 2);
        assert_eq!(p["health_checks"]["last_reason"], "HTTP 500 \"<oops>\"");
        assert_eq!(p["health_checks"]["last_passed"], false);
        assert!(v["upstreams"][1]["peers"][0]["health_checks"].is_null());
        assert_eq!(v["upstreams"][1]["peers"][0]["state"], "down");
    }

    #[test]
    fn streamed_is_the_whole_rendering() {
        use crate::status::stream::tests::{budgets, shapes, sliced};
        use crate::status::stream::Render;
        for snap in shapes() {
            let head = snap.head();
            let whole = render(&snap);
            let lists = [
                (Shape::Status(head), whole),
                (
                    Shape::Upstreams,
                    serde_json::to_vec(&snap.upstreams).unwrap(),
                ),
                (
                    Shape::Upstream,
                    snap.upstreams
                        .first()
                        .map_or(b"null".to_vec(), |u| serde_json::to_vec(u).unwrap()),
                ),
                (
                    Shape::Peers,
                    snap.upstreams
                        .first()
                        .map_or(b"[]".to_vec(), |u| serde_json::to_vec(&u.peers).unwrap()),
                ),
            ];
            for (shape, want) in lists {
                for b in budgets() {
                    let got = sliced(|| Render::Json(Stream::new(shape.clone())), &snap, b);
                    assert!(
                        got == want,
                        "{shape:?} {b:?}:\n{}\n---\n{}",
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want)
                    );
                }
            }
        }
    }

    #[test]
    fn error_body() {
        let v: serde_json::Value = serde_json::from_slice(&error("unknown \"x\"")).unwrap();
        assert_eq!(v["error"], "unknown \"x\"");
    }
}
