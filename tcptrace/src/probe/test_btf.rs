//! BTF built in bytes for unit tests: the shapes of the kernel's structs and
//! tracepoints, without the kernel.

use btf_rs::Btf;

/// Builds BTF in bytes, as `include/uapi/linux/btf.h` lays it out (little endian).
#[derive(Default)]
pub(crate) struct TestBtf {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

const INT: u32 = 1;
pub(crate) const STRUCT: u32 = 4;
pub(crate) const UNION: u32 = 5;
pub(crate) const TYPEDEF: u32 = 8;
pub(crate) const VOLATILE: u32 = 9;

impl TestBtf {
    pub(crate) fn new() -> Self {
        // String offset 0 is the empty name.
        Self {
            strings: vec![0],
            ..Self::default()
        }
    }

    fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        offset
    }

    fn words(&mut self, words: &[u32]) {
        for word in words {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
    }

    /// `struct btf_type`: name, info (kind, kind_flag, vlen), size or type. Returns the id.
    fn header(
        &mut self,
        name: &str,
        kind: u32,
        kind_flag: bool,
        vlen: u32,
        size_or_type: u32,
    ) -> u32 {
        let name = self.string(name);
        self.words(&[
            name,
            (u32::from(kind_flag) << 31) | (kind << 24) | vlen,
            size_or_type,
        ]);
        self.count += 1;
        self.count
    }

    pub(crate) fn int(&mut self, name: &str, bytes: u32) -> u32 {
        let id = self.header(name, INT, false, 0, bytes);
        self.words(&[bytes * 8]);
        id
    }

    pub(crate) fn reference(&mut self, kind: u32, name: &str, target: u32) -> u32 {
        self.header(name, kind, false, 0, target)
    }

    /// A struct or union; members are (name, type id, bit offset, bitfield size).
    pub(crate) fn composite(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let kind_flag = members.iter().any(|m| m.3 != 0);
        let id = self.header(name, kind, kind_flag, members.len() as u32, size);
        for &(name, ty, bit_offset, bitfield) in members {
            let name = self.string(name);
            self.words(&[name, ty, (bitfield << 24) | bit_offset]);
        }
        id
    }

    pub(crate) fn parse(&self) -> Btf {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        bytes.extend_from_slice(&[1, 0]); // version, flags
        let type_len = self.types.len() as u32;
        let str_len = self.strings.len() as u32;
        // hdr_len, type_off, type_len, str_off, str_len
        for word in [24, 0, type_len, type_len, str_len] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(&self.types);
        bytes.extend_from_slice(&self.strings);
        Btf::from_bytes(&bytes).expect("test BTF parses")
    }
}
