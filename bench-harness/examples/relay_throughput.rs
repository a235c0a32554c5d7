//! How fast the bench's UDP relay forwards: a client blasts 1452-byte
//! datagrams through one or more relays (no rate limit, no delay, no loss)
//! to a sink for a few seconds, and the relays' own counters say what went
//! through. The client and the sink are plain blocking sockets on their own
//! threads; everything shares this machine's cores, as in a bench run.
//!
//! ```sh
//! cargo run --release -p chunkstream-bench-harness --example relay_throughput -- [RELAYS=1] [SECONDS=3]
//! ```

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chunkstream_bench_harness::link::LinkConfig;
use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};

const PAYLOAD: usize = 1452;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let relays: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let secs: u64 = args.next().map_or(Ok(3), |a| a.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    sink.set_read_timeout(Some(Duration::from_millis(200)))?;
    let to = sink.local_addr()?;
    let started: Vec<Relay> = (0..relays)
        .map(|i| {
            rt.block_on(Relay::start(RelayConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                to,
                forward: LinkConfig::default(),
                reverse: LinkConfig::default(),
                seed: i as u64,
            }))
        })
        .collect::<Result<_, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let sink_thread = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = sink.recv(&mut buf) {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let targets: Vec<_> = started.iter().map(|r| r.local_addr()).collect();
    let t0 = Instant::now();
    let blaster = {
        let stop = stop.clone();
        std::thread::spawn(move || -> std::io::Result<u64> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            let packet = [0x5au8; PAYLOAD];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for t in &targets {
                    if socket.send_to(&packet, t).is_ok() {
                        sent += PAYLOAD as u64;
                    }
                }
            }
            Ok(sent)
        })
    };
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let sent = blaster.join().expect("blaster")?;
    let elapsed = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    sink_thread.join().expect("sink");
    let mbit = |bytes: u64| bytes as f64 * 8.0 / elapsed / 1e6;
    let mut total = 0;
    for (i, r) in started.iter().enumerate() {
        let s = r.stats();
        total += s.forward.forwarded_bytes;
        println!(
            "relay {i}: offered {:.0} Mbit/s, forwarded {:.0} Mbit/s ({} packets)",
            mbit(s.forward.offered_bytes),
            mbit(s.forward.forwarded_bytes),
            s.forward.forwarded
        );
    }
    println!(
        "{relays} relay(s), {elapsed:.1} s: client sent {:.0} Mbit/s, relays forwarded {:.0} Mbit/s in all, sink got {:.0} Mbit/s",
        mbit(sent),
        mbit(total),
        mbit(received.load(Ordering::Relaxed))
    );
    Ok(())
}
