//! `lb_keepalive N [timeout=60s] [requests=1000] [time=1h];`: idle connections to backends
//! cached per peer, so a request finds one for its peer in O(1) however large the upstream.
//!
//! nginx's own `keepalive` keeps one list of idle connections per upstream and searches it
//! for the chosen peer's address on every request: cheap for a few peers, costly for
//! hundreds. Here each peer has its own short list (most recently used first). The rules for
//! keeping a connection are nginx's (`keepalive_requests`, `keepalive_timeout`,
//! `keepalive_time`, and only after a complete HTTP/1.1 exchange). `IdleList` is the pure
//! bookkeeping; `crate::shell::keepalive` is the nginx glue.

use crate::conf::error::{InvalidValue, NotKeyValue};
use crate::conf::time::parse_time_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConf {
    /// Idle connections kept per peer, per worker.
    pub per_peer: usize,
    /// Close an idle connection after this long (ms).
    pub timeout_ms: u64,
    /// Close a connection after this many requests.
    pub requests: u64,
    /// Close a connection that has been open this long (ms), even if busy.
    pub time_ms: u64,
}

/// What is wrong with an `lb_keepalive` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepaliveError {
    #[error("expects the number of idle connections per peer")]
    NoCount,
    #[error(
        "invalid number of connections \"{}\" (1 to 1024)",
        .0.escape_ascii()
    )]
    BadCount(Vec<u8>),
    #[error(transparent)]
    NotKeyValue(#[from] NotKeyValue),
    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),
    #[error(
        "unknown parameter \"{}\" (known: timeout, requests, time)",
        .0.escape_ascii()
    )]
    UnknownParameter(Vec<u8>),
}

/// Parses the arguments of `lb_keepalive` (without the directive name).
pub fn parse(args: &[&[u8]]) -> Result<KeepaliveConf, KeepaliveError> {
    let mut c = KeepaliveConf {
        per_peer: 0,
        timeout_ms: 60_000,
        requests: 1000,
        time_ms: 3_600_000,
    };
    let Some((first, rest)) = args.split_first() else {
        return Err(KeepaliveError::NoCount);
    };
    c.per_peer = crate::conf::number::decimal::<usize>(first)
        .filter(|&n| (1..=1024).contains(&n))
        .ok_or_else(|| KeepaliveError::BadCount(first.to_vec()))?;
    for arg in rest {
        let (key, value) = match arg.iter().position(|&b| b == b'=') {
            Some(i) => (&arg[..i], &arg[i + 1..]),
            None => return Err(NotKeyValue(arg.to_vec()).into()),
        };
        let bad = |expected| Err(InvalidValue::new(key, value, expected).into());
        match key {
            b"timeout" | b"time" => match parse_time_ms(value) {
                Some(ms) if ms > 0 => {
                    if key == b"timeout" {
                        c.timeout_ms = ms
                    } else {
                        c.time_ms = ms
                    }
                }
                _ => return bad("expected a positive time such as 60s"),
            },
            b"requests" => match crate::conf::number::decimal(value) {
                Some(n) if n > 0 => c.requests = n,
                _ => return bad("expected a positive number"),
            },
            _ => return Err(KeepaliveError::UnknownParameter(key.to_vec())),
        }
    }
    Ok(c)
}

/// A peer's idle connections, most recently used last, at most `capacity` of them. Memory is
/// taken as connections are kept, not reserved up front (a worker of an upstream with 50,000
/// peers and `lb_keepalive 1024` would otherwise reserve 400 MB it may never use); the list
/// grows to the most connections it has held and stays there.
#[derive(Debug, Clone)]
pub struct IdleList<T> {
    items: Vec<T>,
    capacity: usize,
}

impl<T: Copy + PartialEq> IdleList<T> {
    pub fn new(capacity: usize) -> Self {
        IdleList {
            items: Vec::new(),
            capacity,
        }
    }

    /// The most recently used idle connection, O(1).
    pub fn take(&mut self) -> Option<T> {
        self.items.pop()
    }

    /// Keeps `item`; when full, returns the least recently used one, which the caller closes.
    pub fn put(&mut self, item: T) -> Option<T> {
        let evicted = if self.items.len() == self.capacity {
            Some(self.items.remove(0))
        } else {
            None
        };
        self.items.push(item);
        evicted
    }

    /// Forgets `item` (the backend closed it while idle). Returns whether it was there.
    pub fn remove(&mut self, item: T) -> bool {
        match self.items.iter().position(|&x| x == item) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<KeepaliveConf, KeepaliveError> {
        let args: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(&args)
    }

    #[test]
    fn parses() {
        let c = p("8").unwrap();
        assert_eq!(
            (c.per_peer, c.timeout_ms, c.requests, c.time_ms),
            (8, 60_000, 1000, 3_600_000)
        );
        let c = p("2 timeout=5s requests=100 time=10m").unwrap();
        assert_eq!(
            (c.per_peer, c.timeout_ms, c.requests, c.time_ms),
            (2, 5000, 100, 600_000)
        );
        // nginx's time syntax: combined units, a bare number in seconds.
        let c = p("2 timeout=1m30s time=2").unwrap();
        assert_eq!((c.timeout_ms, c.time_ms), (90_000, 2000));
        let bad = |k: &[u8], v: &[u8], expected| {
            KeepaliveError::InvalidValue(InvalidValue::new(k, v, expected))
        };
        for (line, want) in [
            ("", KeepaliveError::NoCount),
            ("0", KeepaliveError::BadCount(b"0".to_vec())),
            ("x", KeepaliveError::BadCount(b"x".to_vec())),
            ("+8", KeepaliveError::BadCount(b"+8".to_vec())),
            (
                "2 requests=+5",
                bad(b"requests", b"+5", "expected a positive number"),
            ),
            (
                "2 timeout=0",
                bad(b"timeout", b"0", "expected a positive time such as 60s"),
            ),
            (
                "2 requests=-1",
                bad(b"requests", b"-1", "expected a positive number"),
            ),
            (
                "2 idle=5",
                KeepaliveError::UnknownParameter(b"idle".to_vec()),
            ),
            ("2 5s", NotKeyValue(b"5s".to_vec()).into()),
        ] {
            assert_eq!(p(line), Err(want), "{line}");
        }
        // The texts nginx prints after "lb_keepalive: " (t/080 asserts some of them).
        let text = |s: &str| p(s).unwrap_err().to_string();
        assert_eq!(text(""), "expects the number of idle connections per peer");
        assert_eq!(text("0"), "invalid number of connections \"0\" (1 to 1024)");
        assert_eq!(
            text("2 timeout=0"),
            "invalid value \"0\" for \"timeout\": expected a positive time such as 60s"
        );
        assert_eq!(
            text("2 idle=5"),
            "unknown parameter \"idle\" (known: timeout, requests, time)"
        );
        assert_eq!(text("2 5s"), "invalid parameter \"5s\": expected key=value");
    }

    #[test]
    fn lifo_with_eviction_of_the_oldest() {
        let mut l = IdleList::new(2);
        assert_eq!(l.take(), None);
        assert_eq!(l.put(1), None);
        assert_eq!(l.put(2), None);
        assert_eq!(l.put(3), Some(1));
        assert_eq!(l.len(), 2);
        assert_eq!(l.take(), Some(3));
        assert!(l.remove(2));
        assert!(!l.remove(2));
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_taken_on_use_and_bounded() {
        let mut l = IdleList::new(1024);
        assert_eq!(l.items.capacity(), 0, "nothing reserved before use");
        l.put(1);
        l.take();
        let cap = l.items.capacity();
        assert!(cap < 1024, "one connection kept: {cap}");
        for i in 0..3000 {
            l.put(i);
        }
        assert_eq!(l.len(), 1024);
        let cap = l.items.capacity();
        for i in 0..3000 {
            l.put(i);
            if i % 3 == 0 {
                l.take();
            }
        }
        assert_eq!(l.items.capacity(), cap, "no allocation once grown");
    }
}
