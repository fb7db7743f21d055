//! Peers added through `lb_api` (`POST upstreams/NAME/peers`): their definitions, in an array
//! in the shared zone, so that every worker builds the same peers from them, a reload keeps
//! them (the zone is handed over), and the state file can save them.
//!
//! The array is only read and written under the zone's mutex (nginx's slab-pool mutex, which
//! the master releases for a worker that dies holding it), in whole entries: plain data, no
//! atomics. Each change bumps the header's `added` counter, which workers compare per request.

/// The longest address text kept (`[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535` is 53).
pub const NAME_MAX: usize = 64;
/// Room for a socket address (`struct sockaddr_in6` is 28 bytes).
pub const SOCKADDR_MAX: usize = 28;

/// One added peer, or a free entry (`upstream` (0, 0)).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedPeer {
    /// `upstream_key` of the upstream the peer belongs to.
    pub upstream: (u64, u64),
    pub fail_timeout_ms: u64,
    pub sockaddr: [u8; SOCKADDR_MAX],
    pub socklen: u32,
    pub name: [u8; NAME_MAX],
    pub name_len: u32,
    pub weight: u32,
    pub max_fails: u32,
    pub max_conns: u32,
    pub backup: u32,
}

/// What defines an added peer, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec<'a> {
    pub name: &'a [u8],
    pub sockaddr: &'a [u8],
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
    pub max_conns: u32,
    pub backup: bool,
}

impl AddedPeer {
    /// An entry for `spec` in the upstream `upstream` (see `upstream_key`); `None` when its
    /// address does not fit.
    pub fn new(upstream: (u64, u64), spec: &PeerSpec) -> Option<AddedPeer> {
        if spec.name.len() > NAME_MAX || spec.sockaddr.len() > SOCKADDR_MAX {
            return None;
        }
        let mut p = AddedPeer {
            upstream,
            fail_timeout_ms: spec.fail_timeout_ms,
            sockaddr: [0; SOCKADDR_MAX],
            socklen: spec.sockaddr.len() as u32,
            name: [0; NAME_MAX],
            name_len: spec.name.len() as u32,
            weight: spec.weight,
            max_fails: spec.max_fails,
            max_conns: spec.max_conns,
            backup: u32::from(spec.backup),
        };
        p.sockaddr[..spec.sockaddr.len()].copy_from_slice(spec.sockaddr);
        p.name[..spec.name.len()].copy_from_slice(spec.name);
        Some(p)
    }

    pub fn is_free(&self) -> bool {
        self.upstream == (0, 0)
    }

    /// The address text (what `$upstream_addr` and the status show).
    pub fn name(&self) -> &[u8] {
        &self.name[..(self.name_len as usize).min(NAME_MAX)]
    }

    pub fn sockaddr(&self) -> &[u8] {
        &self.sockaddr[..(self.socklen as usize).min(SOCKADDR_MAX)]
    }

    pub fn spec(&self) -> PeerSpec<'_> {
        PeerSpec {
            name: self.name(),
            sockaddr: self.sockaddr(),
            weight: self.weight,
            max_fails: self.max_fails,
            fail_timeout_ms: self.fail_timeout_ms,
            max_conns: self.max_conns,
            backup: self.backup != 0,
        }
    }
}

/// The key under which an upstream's added peers are filed (never (0, 0)).
pub fn upstream_key(upstream: &[u8]) -> (u64, u64) {
    super::table::peer_key_of(upstream, &[b"\0added"])
}

/// Why a peer was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    #[error("the upstream already has this peer")]
    Exists,
    #[error("the upstream has {0} added peers, as many as its max_added allows")]
    UpstreamFull(usize),
    #[error("no free entry for added peers in the zone")]
    ZoneFull,
}

/// Files `p` (an entry made by `AddedPeer::new`), if its upstream has fewer than `max` added
/// peers and does not have its address yet.
pub fn insert(entries: &mut [AddedPeer], p: AddedPeer, max: usize) -> Result<usize, AddError> {
    let mine = entries.iter().filter(|e| e.upstream == p.upstream);
    let mut count = 0;
    for e in mine {
        if e.name() == p.name() {
            return Err(AddError::Exists);
        }
        count += 1;
    }
    if count >= max {
        return Err(AddError::UpstreamFull(count));
    }
    let i = entries
        .iter()
        .position(AddedPeer::is_free)
        .ok_or(AddError::ZoneFull)?;
    entries[i] = p;
    Ok(i)
}

/// Removes the upstream's added peer named `name`; whether there was one.
pub fn remove(entries: &mut [AddedPeer], upstream: (u64, u64), name: &[u8]) -> bool {
    match entries
        .iter()
        .position(|e| e.upstream == upstream && e.name() == name)
    {
        Some(i) => {
            entries[i] = free();
            true
        }
        None => false,
    }
}

/// The upstream's added peers, in the order they were filed in.
pub fn of(entries: &[AddedPeer], upstream: (u64, u64)) -> impl Iterator<Item = &AddedPeer> {
    entries.iter().filter(move |e| e.upstream == upstream)
}

/// A free entry.
pub fn free() -> AddedPeer {
    AddedPeer {
        upstream: (0, 0),
        fail_timeout_ms: 0,
        sockaddr: [0; SOCKADDR_MAX],
        socklen: 0,
        name: [0; NAME_MAX],
        name_len: 0,
        weight: 0,
        max_fails: 0,
        max_conns: 0,
        backup: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> PeerSpec<'_> {
        PeerSpec {
            name: name.as_bytes(),
            sockaddr: &[2, 0, 0, 80, 127, 0, 0, 1],
            weight: 2,
            max_fails: 1,
            fail_timeout_ms: 10_000,
            max_conns: 0,
            backup: false,
        }
    }

    #[test]
    fn insert_find_remove() {
        let (a, b) = (upstream_key(b"a"), upstream_key(b"b"));
        assert_ne!(a, b);
        assert_ne!(a, (0, 0));
        let mut t = vec![free(); 3];
        let p = AddedPeer::new(a, &spec("127.0.0.1:80")).unwrap();
        assert_eq!(p.spec(), spec("127.0.0.1:80"));
        assert_eq!(insert(&mut t, p, 2), Ok(0));
        assert_eq!(insert(&mut t, p, 2), Err(AddError::Exists));
        let q = AddedPeer::new(a, &spec("127.0.0.1:81")).unwrap();
        assert_eq!(insert(&mut t, q, 2), Ok(1));
        let r = AddedPeer::new(a, &spec("127.0.0.1:82")).unwrap();
        assert_eq!(insert(&mut t, r, 2), Err(AddError::UpstreamFull(2)));
        // The same address in another upstream is another peer.
        let other = AddedPeer::new(b, &spec("127.0.0.1:80")).unwrap();
        assert_eq!(insert(&mut t, other, 2), Ok(2));
        let names: Vec<&[u8]> = of(&t, a).map(AddedPeer::name).collect();
        assert_eq!(names, [&b"127.0.0.1:80"[..], b"127.0.0.1:81"]);
        assert_eq!(
            insert(&mut t, AddedPeer::new(b, &spec("x")).unwrap(), 9),
            Err(AddError::ZoneFull)
        );
        assert!(remove(&mut t, a, b"127.0.0.1:80"));
        assert!(!remove(&mut t, a, b"127.0.0.1:80"));
        assert_eq!(of(&t, a).count(), 1);
        assert_eq!(of(&t, b).count(), 1);
        // The freed entry is used again.
        assert_eq!(insert(&mut t, r, 2), Ok(0));
    }

    #[test]
    fn sizes_are_checked() {
        let long = "1".repeat(NAME_MAX + 1);
        assert_eq!(AddedPeer::new((1, 1), &spec(&long)), None);
        let mut s = spec("a");
        let big = [0u8; SOCKADDR_MAX + 1];
        s.sockaddr = &big;
        assert_eq!(AddedPeer::new((1, 1), &s), None);
    }
}
