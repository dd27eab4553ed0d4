//! Property-based fuzzing (proptest) of everything that parses outside input: ring
//! buffer records, sock_diag replies and their `tcp_info`, `/proc` links and cgroup
//! files. No input may
//! panic. The test command runs proptest's default 256 cases per property; run longer
//! by hand with `PROPTEST_CASES=1000000 cargo test --release --test fuzz`.

use proptest::prelude::*;
use tcptrace::{
    decode::decode,
    diag::{
        owners::{parse_cgroup, parse_socket_link},
        parse_replies,
        tcp_info::{TcpInfo, MIN_TCP_INFO_LEN},
    },
};
use tcptrace_common::{EVENT_HEAD_SIZE, EVENT_SIZE};

/// A netlink header with a plausible type and length, then anything.
fn netlink_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(2u16), Just(3), Just(20), any::<u16>()],
        0u32..600,
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(kind, length, payload)| {
            let mut bytes = Vec::new();
            bytes.extend(length.to_ne_bytes());
            bytes.extend(kind.to_ne_bytes());
            bytes.extend([0u8; 10]); // flags, sequence, port
            bytes.extend(payload);
            bytes
        })
}

proptest! {
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2 * EVENT_SIZE)) {
        let result = decode(&bytes);
        if bytes.len() != EVENT_SIZE && bytes.len() != EVENT_HEAD_SIZE {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn record_sized_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), EVENT_SIZE)) {
        if let Ok(event) = decode(&bytes) {
            // What decodes is consistent: ports and families come from the record.
            prop_assert_eq!(event.local.is_ipv4(), event.remote.is_ipv4());
        }
    }

    #[test]
    fn any_bytes_parse_as_sock_diag_replies_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut sockets = Vec::new();
        let _ = parse_replies(&bytes, &mut sockets);
    }

    #[test]
    fn netlink_shaped_bytes_parse_or_fail_cleanly(messages in prop::collection::vec(netlink_shaped(), 1..4)) {
        let bytes: Vec<u8> = messages.concat();
        let mut sockets = Vec::new();
        let _ = parse_replies(&bytes, &mut sockets);
    }

    #[test]
    fn any_tcp_info_attribute_reads_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let info = TcpInfo::parse(&bytes);
        prop_assert_eq!(info.is_some(), bytes.len() >= MIN_TCP_INFO_LEN);
        if let Some(info) = info {
            // Written back at the same offsets, the fields read the same again.
            prop_assert_eq!(TcpInfo::parse(&info.to_bytes(bytes.len())), Some(info));
        }
    }

    #[test]
    fn proc_links_parse_or_are_refused(text in ".{0,40}", digits in "[0-9]{0,12}") {
        let _ = parse_socket_link(&text);
        let link = format!("socket:[{digits}]");
        let parsed = parse_socket_link(&link);
        prop_assert_eq!(parsed, digits.parse::<u32>().ok());
    }

    #[test]
    fn cgroup_files_parse_or_are_refused(text in "(([0-9]{1,2}:[a-z,=]{0,12}:/[a-z./]{0,20})?\n?){0,4}") {
        if let Some(path) = parse_cgroup(&text) {
            prop_assert!(!path.is_empty());
        }
    }
}
