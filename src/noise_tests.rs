//! Every parser of outside input — directive arguments and the status page's query string —
//! fed random token soups: none may panic (a worker runs with panic=abort, and `nginx -t`
//! must answer with an `[emerg]`, not a crash), and every refusal says why.

use crate::balance::method;
use crate::headers::spec::parse_add_header;
use crate::keepalive;
use crate::status::query;

const TOKENS: &[&str] = &[
    "round_robin",
    "least_conn",
    "p2c",
    "decay=",
    "decay=10s",
    "decay=0",
    "decay=x",
    "timeout=",
    "timeout=60s",
    "requests=0",
    "requests=1000",
    "time=1h",
    "time=-1",
    "0",
    "1",
    "16",
    "99999999999999999999",
    "X-Served-By",
    "$upstream_addr",
    "always",
    "",
    "=",
    "a b",
    "\r\n",
    ":",
    "x:y",
    "é",
    "\u{0}",
    "format=json",
    "format=prometheus",
    "format=html",
    "format=",
    "upstream=backend",
    "upstream=",
    "&",
    "&&",
    "%20",
    "%zz",
    "=json",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }
    fn tokens(&mut self) -> Vec<Vec<u8>> {
        let n = self.next() % 5;
        (0..n)
            .map(|_| {
                let mut t = TOKENS[self.next() % TOKENS.len()].as_bytes().to_vec();
                if self.next() % 4 == 0 {
                    t.extend_from_slice(TOKENS[self.next() % TOKENS.len()].as_bytes());
                }
                t
            })
            .collect()
    }
}

#[test]
fn directive_arguments_never_panic() {
    let mut rng = Rng(0x853c_49e6_748f_ea9b);
    for _ in 0..50_000 {
        let args = rng.tokens();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        if let Err(e) = method::parse(&refs) {
            assert!(!e.to_string().is_empty());
        }
        if let Err(e) = keepalive::parse(&refs) {
            assert!(!e.to_string().is_empty());
        }
        if let Err(e) = parse_add_header(&refs) {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn status_queries_never_panic() {
    let mut rng = Rng(0xda3e_39cb_94b9_5bdb);
    for _ in 0..50_000 {
        let parts = rng.tokens();
        let args = parts.join(&b'&');
        let accept = parts.first().map(|p| p.as_slice());
        if let Err(e) = query::parse(&args, accept) {
            assert!(!e.to_string().is_empty());
        }
    }
}
