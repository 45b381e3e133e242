//! net: a rate-paced TCP flow with the lab's traffic peer (protocol in [`crate::net`]).
//!
//! Work is bytes moved: `ops` counts the bytes sent and received, `demanded_ops` the bytes the
//! rate asks for since the start (the rate times the time times the directions), so
//! `1 - Δops/Δdemanded_ops` is the share of the traffic a migration or a busy link cost, as for
//! the other workloads. The flow uses little CPU: it reports no demand of its own
//! (`demand_pct` 0; the host then goes by what its QEMU uses). A changed spec ends the running
//! connection and starts one with the new settings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::live::Live;
use crate::net::{run_flow, Flow};
use crate::reporter::Counters;
use crate::spec::Workload;

/// How often the publishing loop updates the counters.
const PUBLISH: Duration = Duration::from_millis(50);

/// The flow `workload` asks for (None: not a net workload).
fn flow_of(workload: &Workload) -> Option<Flow> {
    match *workload {
        Workload::Net {
            dir,
            rate_bps,
            peer,
            port,
        } => Some(Flow {
            dir,
            rate_bps,
            peer: SocketAddr::from((peer, port)),
        }),
        _ => None,
    }
}

pub fn run(live: &Live, counters: &Counters, stop: &AtomicBool) {
    let mut demanded = 0.0f64;
    while !stop.load(Ordering::Relaxed) {
        let version = live.version();
        let Some(flow) = flow_of(&live.workload()) else {
            return;
        };
        let changed = AtomicBool::new(false);
        let ends = || stop.load(Ordering::Relaxed) || changed.load(Ordering::Relaxed);
        std::thread::scope(|s| {
            s.spawn(|| run_flow(flow, &counters.net, &ends));
            let per_s = (flow.rate_bps * flow.dir.ways()) as f64;
            let mut last = Instant::now();
            while !ends() {
                std::thread::sleep(PUBLISH);
                let now = Instant::now();
                demanded += per_s * now.duration_since(last).as_secs_f64();
                last = now;
                let moved = counters.net.rx.load(Ordering::Relaxed)
                    + counters.net.tx.load(Ordering::Relaxed);
                // Demand first: a reader never sees more work than was asked for.
                counters.publish_demand(demanded as u64, 0.0, 0.0);
                counters.publish(moved, 0);
                if live.version() != version {
                    changed.store(true, Ordering::Relaxed);
                }
            }
        });
    }
}
