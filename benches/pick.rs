//! One pick of each balancing method at 10, 1,000 and 10,000 peers, with one peer in ten
//! unhealthy, over shared records as the module keeps them (a pick plus the end of the
//! attempt, as in `get_peer`/`free_peer`). Run: `cargo bench --no-default-features`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ngx_http_lb_module::balance::p2c::score_less;
use ngx_http_lb_module::balance::{Fit, Limits, Method, Selector, Verdict};
use ngx_http_lb_module::health::reason::Reason;
use ngx_http_lb_module::shm::PeerShared;

const LIMITS: Limits = Limits {
    max_fails: 1,
    fail_timeout_ms: 10_000,
    max_conns: 0,
};

fn records(n: usize) -> Vec<PeerShared> {
    (0..n)
        .map(|i| {
            let p = PeerShared::default();
            p.reset_state(true);
            if i % 10 == 3 {
                // Two failed checks with fall=2: unhealthy.
                p.on_check(Reason::Status(500), 2, 2, 1);
                p.on_check(Reason::Status(500), 2, 2, 2);
            }
            p.on_response(200, Some(1000 + (i as u64 % 7) * 100), 1, 5000);
            p
        })
        .collect()
}

fn one_pick(sel: &mut Selector, peers: &[PeerShared], now: u64) -> Option<usize> {
    let verdict = |j: usize| peers[j].verdict(&LIMITS, now);
    let i = match sel {
        Selector::RoundRobin(rr) => rr.pick(|j| verdict(j).can_pick()),
        Selector::LeastConn(lc) => lc.pick(
            |j| peers[j].active(),
            |j| match verdict(j) {
                Verdict::Usable | Verdict::Probe => Fit::Yes,
                Verdict::Full => Fit::NotNow,
                _ => Fit::Unavailable,
            },
            now,
        ),
        Selector::P2c(p) => p.pick(
            |j| verdict(j).can_pick(),
            |a, b| {
                let load = |s: &PeerShared| (s.active(), s.response_time_us_at(now, 5000));
                score_less(load(&peers[a]), load(&peers[b]))
            },
        ),
    }?;
    let mine = core::sync::atomic::AtomicU32::new(0);
    peers[i].on_pick(&LIMITS, now, &mine);
    peers[i].on_done(false, &LIMITS, now, &mine);
    if let Selector::LeastConn(lc) = sel {
        lc.set_active(i, 0);
    }
    Some(i)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for method in [Method::RoundRobin, Method::LeastConn, Method::P2c] {
        for n in [10usize, 1000, 10_000] {
            let peers = records(n);
            let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 3) as u32).collect();
            let mut sel = Selector::new(method, &weights, 42);
            let mut now = 1_000u64;
            g.bench_with_input(BenchmarkId::new(method.name(), n), &n, |b, _| {
                b.iter(|| {
                    now += 1;
                    black_box(one_pick(&mut sel, &peers, now / 1000))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
