//! The Kafka envelope decoder and the intake checks on arbitrary headers and payloads:
//! a message may be anything, and must be decoded or refused with a reason, never
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow::messaging::envelope;
use sagaflow::runtime::intake;

/// Splits the input into up to 12 headers (name and value separated by 0xff bytes,
/// headers by 0xfe) and a payload after the first 0xfd.
fn message(data: &[u8]) -> (Vec<(String, Vec<u8>)>, Option<&[u8]>) {
    let (head, payload) = match data.iter().position(|b| *b == 0xfd) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let headers = head
        .split(|b| *b == 0xfe)
        .take(12)
        .filter_map(|h| {
            let i = h.iter().position(|b| *b == 0xff)?;
            let name = String::from_utf8_lossy(&h[..i]).into_owned();
            Some((name, h[i + 1..].to_vec()))
        })
        .collect();
    (headers, payload)
}

fuzz_target!(|data: &[u8]| {
    let (headers, payload) = message(data);
    if let Ok(ev) = envelope::decode(&headers, payload) {
        let _ = intake::event_problem(&ev);
        let _ = envelope::reply_address(&ev);
    }
});
