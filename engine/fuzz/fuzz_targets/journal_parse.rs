//! The receiver's journal from arbitrary bytes (what a crash, a full disk
//! or a hostile neighbour leaves): no panic, records bounded by the input.
//!
//! Raw bytes rarely get past the header's check, so each input is also
//! "sealed": the first bytes taken as a header (its name length clamped to
//! what follows), the rest as 40-byte records, each given its correct
//! check (the format is in `engine/src/journal.rs`), so the fields behind
//! the checks are fuzzed too.
#![no_main]

use chunkstream_engine::journal::{RECORD_LEN, block_count, parse};
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) -> [u8; 8] {
    blake3::hash(b).as_bytes()[..8].try_into().unwrap()
}

fn assert_sane(data: &[u8]) {
    if let Ok(p) = parse(data) {
        assert!(p.records.len() <= data.len() / RECORD_LEN);
        let blocks = block_count(p.header.size, p.header.block_size_log2);
        assert!(p.records.iter().all(|&(b, _)| b < blocks));
    }
}

fuzz_target!(|data: &[u8]| {
    assert_sane(data);
    const FIXED: usize = 6 + 2 + 1 + 1 + 8 + 32 + 2;
    if data.len() < FIXED {
        return;
    }
    let mut header = data[..FIXED].to_vec();
    header[..6].copy_from_slice(b"CSJRNL");
    let rest = &data[FIXED..];
    let name_len = usize::from(u16::from_le_bytes([header[50], header[51]])).min(rest.len());
    header[50..52].copy_from_slice(&(name_len as u16).to_le_bytes());
    header.extend_from_slice(&rest[..name_len]);
    let mut sealed = header.clone();
    sealed.extend_from_slice(&check(&header));
    for rec in rest[name_len..].chunks(40) {
        sealed.extend_from_slice(rec);
        if rec.len() == 40 {
            sealed.extend_from_slice(&check(rec));
        }
    }
    assert_sane(&sealed);
});
