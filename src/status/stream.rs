//! Rendering a bounded slice at a time: the renderers write the head of a document, then its
//! peers a few at a time, then its tail, each call stopping once it has written about as many
//! bytes or read as many peers as its `Budget` allows. The concatenation of the slices is the
//! whole rendering, byte for byte, however the budget cuts it.
//!
//! The renderers read what they show from a `Source`: a `Snapshot` (everything copied at once,
//! as the tests and small documents use it), or the shell's live view of the shared records,
//! which copies each slice of peers when it is rendered, so that neither the copy nor the
//! output of a scrape grows with the number of peers.

use std::borrow::Cow;
use std::ops::Range;

use super::snapshot::{PeerSnapshot, Snapshot, UpstreamHead};
use super::{html, json, prometheus};

/// Where a streamed rendering takes its data from. Upstreams and their peers are numbered
/// from 0; the numbers, the peer counts and the peers' addresses stay the same while a
/// rendering runs (the values of the records may move).
pub trait Source {
    fn upstreams(&self) -> usize;
    /// Upstream `u` without its peers.
    fn head(&self, u: usize) -> UpstreamHead;
    fn peer_count(&self, u: usize) -> usize;
    /// The address of peer `i` of upstream `u`, as its `PeerSnapshot` would show it.
    fn address(&self, u: usize, i: usize) -> Cow<'_, str>;
    /// Replaces the contents of `out` with the snapshots of peers `range` of upstream `u`
    /// (reusing the memory of those it held, as it can).
    fn peers(&self, u: usize, range: Range<usize>, out: &mut Vec<PeerSnapshot>);
}

impl Source for Snapshot {
    fn upstreams(&self) -> usize {
        self.upstreams.len()
    }
    fn head(&self, u: usize) -> UpstreamHead {
        self.upstreams[u].head()
    }
    fn peer_count(&self, u: usize) -> usize {
        self.upstreams[u].peers.len()
    }
    fn address(&self, u: usize, i: usize) -> Cow<'_, str> {
        Cow::Borrowed(&self.upstreams[u].peers[i].address)
    }
    fn peers(&self, u: usize, range: Range<usize>, out: &mut Vec<PeerSnapshot>) {
        out.clear();
        out.extend_from_slice(&self.upstreams[u].peers[range]);
    }
}

/// How much one call may do: it stops once the output has grown by `bytes`, or it has read
/// `peers` peers (at least one step is always made, so every call makes progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: usize,
    pub peers: usize,
}

impl Budget {
    /// No limit: the whole rendering in one call.
    pub const ALL: Budget = Budget {
        bytes: usize::MAX,
        peers: usize::MAX,
    };
}

/// Peers read from the source at once (a call may overshoot its byte budget by this many
/// peers' output).
pub(crate) const BATCH: usize = 16;

/// What is left of a call's budget.
pub(crate) struct Meter {
    until: usize,
    peers: usize,
}

impl Meter {
    pub(crate) fn new(out: &[u8], b: Budget) -> Meter {
        Meter {
            until: out.len().saturating_add(b.bytes.max(1)),
            peers: b.peers.max(1),
        }
    }

    /// Whether the call is done: enough written or read.
    pub(crate) fn spent(&self, out: &[u8]) -> bool {
        out.len() >= self.until || self.peers == 0
    }

    /// How many of `left` peers to read now (at least one), counted as read.
    pub(crate) fn take(&mut self, left: usize, batch: usize) -> usize {
        let n = left.min(batch).min(self.peers).max(1);
        self.peers = self.peers.saturating_sub(n);
        n
    }

    /// As `take`, for work `per_peer` times lighter than reading a peer (looking at its
    /// address only).
    pub(crate) fn take_light(&mut self, left: usize, per_peer: usize) -> usize {
        let n = left.min(self.peers.max(1).saturating_mul(per_peer)).max(1);
        self.peers = self.peers.saturating_sub(n.div_ceil(per_peer));
        n
    }
}

/// One of the three formats, as a rendering in progress.
pub enum Render {
    Json(json::Stream),
    Prometheus(prometheus::Stream),
    Html(html::Stream),
}

impl Render {
    /// Appends the next slice of the rendering to `out`; true once the rendering is complete
    /// (a later call appends nothing).
    pub fn fill<S: Source + ?Sized>(&mut self, src: &S, out: &mut Vec<u8>, b: Budget) -> bool {
        match self {
            Render::Json(s) => s.fill(src, out, b),
            Render::Prometheus(s) => s.fill(src, out, b),
            Render::Html(s) => s.fill(src, out, b),
        }
    }

    /// The whole rendering at once.
    pub fn all<S: Source + ?Sized>(mut self, src: &S) -> Vec<u8> {
        let mut out = Vec::new();
        while !self.fill(src, &mut out, Budget::ALL) {}
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::snapshot::tests::sample;
    use crate::status::snapshot::{Snapshot, UpstreamSnapshot};

    /// Renders in slices of `b`, checking that every call makes progress and respects its
    /// budget (give or take a batch of peers), and returns the concatenation.
    pub fn sliced(
        mut make: impl FnMut() -> Render,
        src: &(impl Source + ?Sized),
        b: Budget,
    ) -> Vec<u8> {
        let mut r = make();
        let mut out = Vec::new();
        let mut calls = 0;
        loop {
            let done = r.fill(src, &mut out, b);
            calls += 1;
            assert!(calls < 10_000_000, "no end");
            if done {
                let after = out.len();
                assert!(r.fill(src, &mut out, b), "stays done");
                assert_eq!(out.len(), after, "nothing after the end");
                return out;
            }
        }
    }

    /// Snapshots that exercise the edges: no upstream, upstreams without peers, one peer,
    /// many peers, duplicate addresses, several upstreams.
    pub fn shapes() -> Vec<Snapshot> {
        let base = sample();
        let peer = base.upstreams[0].peers[0].clone();
        let mut out = Vec::new();
        let mut s = base.clone();
        s.upstreams.clear();
        out.push(s);
        let mut s = base.clone();
        for u in &mut s.upstreams {
            u.peers.clear();
        }
        out.push(s);
        out.push(base.clone());
        let mut s = base.clone();
        s.upstreams[1].peers.clear();
        out.push(s);
        let mut s = base.clone();
        s.upstreams.truncate(1);
        s.upstreams[0].peers.truncate(1);
        out.push(s);
        // Many peers over three upstreams, some addresses twice or three times, some values
        // missing.
        let mut s = base.clone();
        let many = |name: &str, n: usize, checks: bool| {
            let peers = (0..n)
                .map(|i| {
                    let mut p = peer.clone();
                    p.address = format!("10.0.{}.{}:80", i / 7, i % 7);
                    p.name = p.address.clone();
                    p.requests = i as u64 * 3;
                    p.weight = 1 + i as u32 % 5;
                    p.backup = i % 11 == 0;
                    p.source = ["config", "dns", "api"][i % 3];
                    p.resolved = i % 3 == 1;
                    p.response_time_ms = (i % 4 != 0).then_some(i as f64 / 8.0);
                    p.slow_start = (i % 5 == 0).then_some(0.5);
                    if !checks {
                        p.health_checks = None;
                    }
                    p
                })
                .collect();
            UpstreamSnapshot {
                name: name.into(),
                kind: if name == "a" { "stream" } else { "http" }.into(),
                method: "least_conn".into(),
                checks: None,
                panic: Some(false),
                peers,
            }
        };
        let mut a = many("a", 50, true);
        a.peers[10].address = a.peers[3].address.clone();
        a.peers[20].address = a.peers[3].address.clone();
        let mut b = many("b\"\n", 37, false);
        b.peers[36].address = b.peers[0].address.clone();
        s.upstreams.push(a);
        s.upstreams.push(UpstreamSnapshot {
            peers: Vec::new(),
            ..many("empty", 0, false)
        });
        s.upstreams.push(b);
        out.push(s);
        // Only peers without response times or checks (families without samples).
        let mut s = base;
        s.upstreams.truncate(1);
        s.upstreams[0].checks = None;
        s.upstreams[0].panic = None;
        for p in &mut s.upstreams[0].peers {
            p.health_checks = None;
            p.response_time_ms = None;
        }
        out.push(s);
        out
    }

    pub fn budgets() -> Vec<Budget> {
        let mut out = vec![Budget::ALL];
        for bytes in [1, 7, 100, 1000, 4096, 65536, usize::MAX] {
            for peers in [1, 2, 3, 17, 100, usize::MAX] {
                out.push(Budget { bytes, peers });
            }
        }
        out
    }

    #[test]
    fn meter() {
        let out = vec![0u8; 10];
        let mut m = Meter::new(&out, Budget { bytes: 5, peers: 3 });
        assert!(!m.spent(&out));
        assert_eq!(m.take(10, 16), 3);
        assert!(m.spent(&out));
        assert_eq!(m.take(10, 16), 1, "always a step");
        let mut m = Meter::new(&out, Budget { bytes: 5, peers: 3 });
        assert_eq!(m.take_light(100, 16), 48);
        assert!(m.spent(&out));
        let mut m = Meter::new(&out, Budget { bytes: 5, peers: 3 });
        assert_eq!(m.take_light(17, 16), 17);
        assert_eq!(m.take_light(100, 16), 16);
        assert!(m.spent(&out));
        let m = Meter::new(&out, Budget { bytes: 0, peers: 0 });
        assert!(!m.spent(&out));
        assert!(m.spent(&[0u8; 11]));
    }
}
