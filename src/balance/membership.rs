//! How a peer set follows a new list of addresses (a resolved name's answer changed): which
//! peers stay, which join, which leave, and which addresses are left out over the limit.
//! Pure: peers are named by their record key; the nginx side (`shell::resolve`) reads the list
//! and carries the plan out.

use core::hash::{BuildHasherDefault, Hasher};
use std::collections::HashMap;

/// A peer's identity (a record key: upstream name and address, hashed).
pub type Key = (u64, u64);

/// Hashes a `Key` by taking its first half: keys are hashes already (`shm::table::peer_key`),
/// so hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `Key`s (they hash as two u64s); a fallback for other types.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        if self.0 == 0 {
            self.0 = n;
        }
    }
}

/// A map keyed by peer keys.
pub type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// What becomes of one address of the new list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Already a peer, at this index of the current set: keeps its state.
    Keep(usize),
    /// A new peer.
    Join,
    /// Left out: more resolved addresses than the limit.
    Ignore,
}

/// The change from the current peers to a new list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One action per address of the new list, in its order.
    pub actions: Vec<Action>,
    /// Indices of current peers that are not in the new set.
    pub left: Vec<usize>,
    /// Resolved addresses left out over the limit.
    pub ignored: usize,
}

/// Plans the change from `current` (peer keys by index) to `list` (each address's key and
/// whether it came from a resolved name). Configured addresses always belong; resolved ones up
/// to `max_resolved`, current peers first, so that an answer over the limit does not shuffle
/// the peers. Costs O(current + list) hashing and no more.
pub fn plan(current: &KeyMap<usize>, list: &[(Key, bool)], max_resolved: usize) -> Plan {
    // Each address's place among the current peers (one lookup each).
    let known: Vec<Option<usize>> = list.iter().map(|(k, _)| current.get(k).copied()).collect();
    let mut actions = vec![Action::Ignore; list.len()];
    let mut room = max_resolved;
    // Current peers first, then newcomers, each in list order.
    for pass in [true, false] {
        for (i, &(_, resolved)) in list.iter().enumerate() {
            if known[i].is_some() != pass {
                continue;
            }
            if resolved {
                if room == 0 {
                    continue;
                }
                room -= 1;
            }
            actions[i] = known[i].map_or(Action::Join, Action::Keep);
        }
    }
    let mut kept = vec![false; current.len()];
    for a in &actions {
        if let Action::Keep(j) = a {
            if let Some(k) = kept.get_mut(*j) {
                *k = true;
            }
        }
    }
    let mut left: Vec<usize> = current
        .values()
        .copied()
        .filter(|&j| !kept.get(j).copied().unwrap_or(false))
        .collect();
    left.sort_unstable();
    let ignored = actions.iter().filter(|a| **a == Action::Ignore).count();
    Plan {
        actions,
        left,
        ignored,
    }
}

/// The keys of a new list from the last list's, hashing only what is new. nginx deletes peers
/// in place and appends new ones at the end of each list (primaries, backups), so the old
/// entries are found in order: a change costs a comparison per entry and a hash per new entry.
/// `group(x)` names an entry's list; `base(x)` is the key of an entry with no duplicate;
/// `count` holds how many entries of the old list have each key, and is updated. `None` when
/// a new entry's key is already taken (duplicates are numbered by occurrence: the caller then
/// computes all keys in full).
pub fn follow_keys<T: PartialEq>(
    old: &[T],
    old_keys: &[Key],
    count: &mut KeyMap<u32>,
    new: &[T],
    group: impl Fn(&T) -> bool,
    base: impl Fn(&T) -> Key,
) -> Option<Vec<Key>> {
    let mut keys = vec![(0, 0); new.len()];
    let mut matched = vec![false; old.len()];
    let mut fresh = Vec::new();
    let mut next = 0;
    // After an entry not found, the rest of its list is new (appended) too.
    let mut appended_in: Option<bool> = None;
    for (i, e) in new.iter().enumerate() {
        if appended_in == Some(group(e)) {
            fresh.push(i);
            continue;
        }
        match (next..old.len()).find(|&q| old[q] == *e) {
            Some(q) => {
                keys[i] = old_keys[q];
                matched[q] = true;
                next = q + 1;
            }
            None => {
                fresh.push(i);
                appended_in = Some(group(e));
            }
        }
    }
    let mut after = count.clone();
    for (q, _) in matched.iter().enumerate().filter(|(_, m)| !**m) {
        if let Some(n) = after.get_mut(&old_keys[q]) {
            *n -= 1;
            if *n == 0 {
                after.remove(&old_keys[q]);
            }
        }
    }
    for i in fresh {
        let k = base(&new[i]);
        let n = after.entry(k).or_insert(0);
        *n += 1;
        if *n > 1 {
            return None;
        }
        keys[i] = k;
    }
    *count = after;
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u64) -> Key {
        (n, n * 31)
    }

    fn index(keys: &[u64]) -> KeyMap<usize> {
        keys.iter().enumerate().map(|(i, &n)| (k(n), i)).collect()
    }

    #[test]
    fn stays_joins_and_leaves() {
        let cur = index(&[1, 2, 3]);
        let p = plan(&cur, &[(k(2), true), (k(4), true), (k(1), false)], 10);
        assert_eq!(
            p.actions,
            vec![Action::Keep(1), Action::Join, Action::Keep(0)]
        );
        assert_eq!(p.left, vec![2]);
        assert_eq!(p.ignored, 0);
    }

    #[test]
    fn the_limit_keeps_current_peers_first_and_never_configured_ones_out() {
        let cur = index(&[5, 6]);
        // Two resolved places: the current 6 and 5 keep theirs, newcomers 7 and 8 wait.
        let list = [
            (k(7), true),
            (k(6), true),
            (k(100), false),
            (k(8), true),
            (k(5), true),
        ];
        let p = plan(&cur, &list, 2);
        assert_eq!(
            p.actions,
            vec![
                Action::Ignore,
                Action::Keep(1),
                Action::Join,
                Action::Ignore,
                Action::Keep(0)
            ]
        );
        assert_eq!((p.left.len(), p.ignored), (0, 2));
        // From nothing (a fresh start), the first two in list order.
        let p = plan(&KeyMap::default(), &list, 2);
        assert_eq!(
            p.actions,
            vec![
                Action::Join,
                Action::Join,
                Action::Join,
                Action::Ignore,
                Action::Ignore
            ]
        );
    }

    #[test]
    fn an_empty_answer_leaves_only_configured_peers() {
        let cur = index(&[1, 2]);
        let p = plan(&cur, &[(k(9), false)], 4);
        assert_eq!(p.actions, vec![Action::Join]);
        assert_eq!(p.left, vec![0, 1]);
    }

    /// Random sets: applying plans in a row always yields exactly the wanted set (up to the
    /// limit), keeps every peer that stays, and changes only what changed.
    #[test]
    fn random_sequences_of_answers() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let limit = 1 + rnd(12) as usize;
            let mut cur: Vec<u64> = Vec::new();
            for _ in 0..20 {
                let list: Vec<u64> = {
                    let mut s: Vec<u64> = (0..rnd(16)).map(|_| rnd(24)).collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let entries: Vec<(Key, bool)> = list.iter().map(|&n| (k(n), n >= 4)).collect();
                let idx = index(&cur);
                let p = plan(&idx, &entries, limit);
                let mut next = Vec::new();
                for (i, a) in p.actions.iter().enumerate() {
                    match a {
                        Action::Keep(j) => {
                            assert_eq!(cur[*j], list[i]);
                            next.push(list[i]);
                        }
                        Action::Join => {
                            assert!(!cur.contains(&list[i]));
                            next.push(list[i]);
                        }
                        Action::Ignore => assert!(list[i] >= 4, "configured peers always join"),
                    }
                }
                let resolved = next.iter().filter(|&&n| n >= 4).count();
                assert!(resolved <= limit);
                let wanted_resolved = list.iter().filter(|&&n| n >= 4).count();
                assert_eq!(resolved, wanted_resolved.min(limit));
                assert_eq!(p.ignored, wanted_resolved - resolved);
                // Every current peer either stays or leaves, never both.
                for (j, n) in cur.iter().enumerate() {
                    assert_eq!(p.left.contains(&j), !next.contains(n));
                }
                // A current peer that is still in the answer is never dropped for a newcomer.
                for n in &cur {
                    if list.contains(n) {
                        assert!(next.contains(n));
                    }
                }
                cur = next;
            }
        }
    }

    /// Random edits in nginx's manner (deletions anywhere, additions at the end of each of two
    /// lists) and arbitrary shuffles: the followed keys always equal the keys computed in full.
    #[test]
    fn followed_keys_equal_full_keys() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let base = |e: &(u64, bool)| k(e.0 * 2 + u64::from(e.1));
        for _ in 0..300 {
            let mut list: Vec<(u64, bool)> = Vec::new();
            let mut keys: Vec<Key> = Vec::new();
            let mut count = KeyMap::default();
            let mut next_id = 0;
            for step in 0..30 {
                let mut new: Vec<(u64, bool)> =
                    list.iter().copied().filter(|_| rnd(6) != 0).collect();
                for backup in [false, true] {
                    for _ in 0..rnd(3) {
                        // Mostly new ids; now and then one that exists (a duplicate).
                        let id = if rnd(10) == 0 && next_id > 0 {
                            rnd(next_id)
                        } else {
                            next_id += 1;
                            next_id
                        };
                        let at = new
                            .iter()
                            .rposition(|e| e.1 == backup)
                            .map_or(if backup { new.len() } else { 0 }, |p| p + 1);
                        new.insert(at, (id, backup));
                    }
                }
                if step % 7 == 6 {
                    // Not nginx's manner: a shuffle. Still right, only slower.
                    new.reverse();
                }
                let full: Vec<Key> = new.iter().map(base).collect();
                let mut uniq = full.clone();
                uniq.sort_unstable();
                uniq.dedup();
                let dups = uniq.len() != full.len();
                match follow_keys(&list, &keys, &mut count, &new, |e| e.1, base) {
                    Some(got) => {
                        assert!(!dups);
                        assert_eq!(got, full);
                    }
                    None => assert!(dups),
                }
                // The caller's full computation resets the counts.
                count = KeyMap::default();
                for key in &full {
                    *count.entry(*key).or_insert(0) += 1;
                }
                if dups {
                    // Keep the test within lists without duplicates.
                    new.sort_unstable();
                    new.dedup();
                    count = KeyMap::default();
                    for e in &new {
                        *count.entry(base(e)).or_insert(0) += 1;
                    }
                }
                keys = new.iter().map(base).collect();
                list = new;
            }
        }
    }
}
