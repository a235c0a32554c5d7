//! Every frame type, report datagrams, the shard header and the block header from arbitrary
//! bytes: no panic, no allocation beyond what the input could hold, and a
//! frame that decodes re-encodes to the bytes it came from.
#![no_main]

use chunkstream_engine::wire::{
    BLOCK_HEADER_LEN, BlockHeader, ShardHeader, decode_frame, decode_report,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A control stream: frames back to back until one is incomplete or bad.
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode_frame(rest) {
        assert!(used > 0 && used <= rest.len());
        assert_eq!(&frame.encode()[..], &rest[..used], "re-encoding differs");
        rest = &rest[used..];
    }
    // A report datagram (receiver to sender): only report frames, each
    // re-encoding to its bytes.
    if let Ok(frames) = decode_report(data) {
        let again: Vec<u8> = frames.iter().flat_map(|f| f.encode().to_vec()).collect();
        assert_eq!(&again[..], data, "a report re-encodes differently");
    }
    // A shard datagram.
    if let Some((header, payload)) = ShardHeader::decode(data) {
        assert_eq!(
            payload.len() + chunkstream_engine::wire::SHARD_HEADER_LEN,
            data.len()
        );
        let _ = header;
    }
    // A block stream's header.
    if let Some(head) = data.first_chunk::<BLOCK_HEADER_LEN>() {
        let h = BlockHeader::decode(head);
        assert_eq!(&h.encode()[..], &head[..]);
    }
});
