//! The rise/fall state machine of active health checks, on one packed word so that the shared
//! record changes atomically: `up`, whether any result arrived yet, and the current runs of
//! passes and failures.

/// A peer's health word. Bit 0: up; bit 1: at least one result; bits 16..32: consecutive passes;
/// bits 32..48: consecutive failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health(pub u64);

/// A change of state, to be logged once by whoever caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

impl Health {
    /// Before the first result: up or down as configured (`default=`).
    pub fn initial(default_up: bool) -> Health {
        Health(u64::from(default_up))
    }

    pub fn up(self) -> bool {
        self.0 & 1 != 0
    }

    /// No result yet ("checking").
    pub fn checking(self) -> bool {
        self.0 & 2 == 0
    }

    pub fn passes(self) -> u32 {
        ((self.0 >> 16) & 0xffff) as u32
    }

    pub fn fails(self) -> u32 {
        ((self.0 >> 32) & 0xffff) as u32
    }

    fn with(up: bool, passes: u32, fails: u32) -> Health {
        Health(
            u64::from(up)
                | 2
                | (u64::from(passes.min(0xffff)) << 16)
                | (u64::from(fails.min(0xffff)) << 32),
        )
    }

    /// Applies one probe result: `rise` consecutive passes bring a down peer up, `fall`
    /// consecutive failures take an up peer down.
    pub fn apply(self, passed: bool, rise: u32, fall: u32) -> (Health, Option<Transition>) {
        let up = self.up();
        if passed {
            let passes = self.passes().saturating_add(1);
            if !up && passes >= rise {
                (Health::with(true, passes, 0), Some(Transition::WentUp))
            } else {
                (Health::with(up, passes, 0), None)
            }
        } else {
            let fails = self.fails().saturating_add(1);
            if up && fails >= fall {
                (Health::with(false, 0, fails), Some(Transition::WentDown))
            } else {
                (Health::with(up, 0, fails), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut h: Health, results: &str, rise: u32, fall: u32) -> (Health, Vec<Transition>) {
        let mut t = vec![];
        for c in results.chars() {
            let (n, tr) = h.apply(c == '+', rise, fall);
            h = n;
            t.extend(tr);
        }
        (h, t)
    }

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        let (h, t) = run(Health::initial(true), "--+---", 2, 3);
        assert!(!h.up());
        assert_eq!(t, vec![Transition::WentDown]);
        assert_eq!(h.fails(), 3);
        let (h, t) = run(Health::initial(true), "--+--", 2, 3);
        assert!(h.up());
        assert!(t.is_empty());
    }

    #[test]
    fn rises_after_rise_passes_in_a_row() {
        let (h, t) = run(Health::initial(true), "---+-++", 2, 3);
        assert!(h.up());
        assert_eq!(t, vec![Transition::WentDown, Transition::WentUp]);
        let (h, _) = run(Health::initial(true), "---+-+", 2, 3);
        assert!(!h.up());
    }

    #[test]
    fn checking_until_first_result() {
        let h = Health::initial(false);
        assert!(h.checking() && !h.up());
        let (h, t) = h.apply(true, 2, 3);
        assert!(!h.checking() && !h.up() && t.is_none());
        let (h, t) = h.apply(true, 2, 3);
        assert!(h.up());
        assert_eq!(t, Some(Transition::WentUp));
        // default up, first failure: still up, no longer checking.
        let (h, t) = Health::initial(true).apply(false, 2, 3);
        assert!(h.up() && !h.checking() && t.is_none());
    }

    #[test]
    fn rise_and_fall_of_one() {
        let (h, t) = run(Health::initial(true), "-+-", 1, 1);
        assert!(!h.up());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn counters_saturate() {
        let mut h = Health::initial(true);
        for _ in 0..70_000 {
            h = h.apply(true, 2, 3).0;
        }
        assert_eq!(h.passes(), 0xffff);
        assert!(h.up());
    }
}
