// SPDX-License-Identifier: MIT OR Apache-2.0

//! Sparse video memory.
//!
//! VRAM is kept as 64 KiB chunks allocated on first write, so an 80 GiB GPU
//! costs only what the guest touches. Memory that was never written reads as
//! the poison pattern [`POISON`] (the little-endian bytes `ef be ad de`
//! repeated), so a page table the driver forgot to clear is visible.
//!
//! The dump format written by [`Vram::dump`] is described there;
//! [`Vram::load`] reads it back.

use std::collections::HashMap;
use std::io::{self, Read, Write};

/// Size of one allocation chunk.
pub const CHUNK_SIZE: u64 = 64 * 1024;

/// 32-bit poison value that never-written VRAM reads as.
pub const POISON: u32 = 0xdead_beef;

/// 64-bit view of the poison (what an 8-byte read of fresh VRAM returns).
pub const POISON64: u64 = 0xdead_beef_dead_beef;

/// Magic at the start of a VRAM dump.
pub const DUMP_MAGIC: &[u8; 8] = b"NVMMVRAM";

/// Poison byte at a VRAM address.
fn poison_byte(addr: u64) -> u8 {
    // CAST: `addr % 4` is below 4.
    POISON.to_le_bytes()[(addr % 4) as usize]
}

/// An access that does not fit in VRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VRAM access of {len} bytes at {addr:#x} is beyond the end of VRAM ({size:#x})")]
pub struct OutOfRange {
    /// Start address of the access.
    pub addr: u64,
    /// Length of the access.
    pub len: u64,
    /// VRAM size.
    pub size: u64,
}

/// Why a VRAM dump cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid dump.
    #[error("not a valid VRAM dump: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> LoadError {
    LoadError::Invalid(msg.into())
}

/// `read_exact`, with a short read reported as a truncated dump.
fn read_part(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), LoadError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!("truncated in the {what}")),
        _ => LoadError::Io(e),
    })
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Sparse VRAM.
///
/// # Invariants
///
/// Every key in `chunks` is below `size / CHUNK_SIZE` (rounded up) and every
/// value holds exactly `CHUNK_SIZE` bytes.
pub struct Vram {
    size: u64,
    chunks: HashMap<u64, Box<[u8]>>,
}

impl Vram {
    /// Creates poisoned VRAM of `size` bytes.
    pub fn new(size: u64) -> Self {
        Vram {
            size,
            chunks: HashMap::new(),
        }
    }

    /// VRAM size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of chunks that have been written.
    pub fn touched_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Changes the size to `size` bytes (a multiple of [`CHUNK_SIZE`]; the
    /// hostile mode draws a new size at every device reset). Contents below
    /// the new end are kept; memory beyond it is forgotten, so growing again
    /// exposes poison.
    pub fn resize(&mut self, size: u64) {
        self.size = size;
        let chunks = size.div_ceil(CHUNK_SIZE);
        self.chunks.retain(|k, _| *k < chunks);
    }

    /// Forgets every write: all of VRAM reads as poison again.
    pub fn poison_all(&mut self) {
        self.chunks.clear();
    }

    fn check(&self, addr: u64, len: usize) -> Result<(), OutOfRange> {
        // CAST: usize is at most 64 bits on supported targets.
        let len64 = len as u64;
        match addr.checked_add(len64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(OutOfRange {
                addr,
                len: len64,
                size: self.size,
            }),
        }
    }

    /// Whether `[addr, addr + len)` lies inside VRAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some_and(|end| end <= self.size)
    }

    /// Reads `buf.len()` bytes at `addr`.
    ///
    /// # Errors
    ///
    /// [`OutOfRange`] if the access does not fit; `buf` is left unchanged.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        self.check(addr, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            // CAST: `done` fits in u64; the sum was checked above.
            let a = addr + done as u64;
            let chunk = a / CHUNK_SIZE;
            // CAST: offsets inside a chunk are below 64 KiB.
            let off = (a % CHUNK_SIZE) as usize;
            let n = (CHUNK_SIZE as usize - off).min(buf.len() - done);
            match self.chunks.get(&chunk) {
                Some(data) => buf[done..done + n].copy_from_slice(&data[off..off + n]),
                None => {
                    for (i, b) in buf[done..done + n].iter_mut().enumerate() {
                        // CAST: `i` is below 64 KiB.
                        *b = poison_byte(a + i as u64);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `addr`.
    ///
    /// # Errors
    ///
    /// [`OutOfRange`] if the access does not fit; nothing is written.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.check(addr, data.len())?;
        let mut done = 0usize;
        while done < data.len() {
            // CAST: see `read`.
            let a = addr + done as u64;
            let chunk = a / CHUNK_SIZE;
            let off = (a % CHUNK_SIZE) as usize;
            let n = (CHUNK_SIZE as usize - off).min(data.len() - done);
            let base = chunk * CHUNK_SIZE;
            let entry = self.chunks.entry(chunk).or_insert_with(|| {
                (0..CHUNK_SIZE)
                    .map(|i| poison_byte(base + i))
                    .collect::<Vec<u8>>()
                    .into_boxed_slice()
            });
            entry[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads a little-endian 64-bit value.
    ///
    /// # Errors
    ///
    /// [`OutOfRange`] if the 8 bytes do not fit.
    pub fn read_u64(&self, addr: u64) -> Result<u64, OutOfRange> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian 32-bit value.
    ///
    /// # Errors
    ///
    /// [`OutOfRange`] if the 4 bytes do not fit.
    pub fn read_u32(&self, addr: u64) -> Result<u32, OutOfRange> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes the touched chunks to `w`.
    ///
    /// Format (all integers little-endian): the 8-byte magic `NVMMVRAM`, u32
    /// version (1), u32 chunk size (65536), u64 VRAM size, u64 chunk count
    /// `n`, u32 poison value, u32 reserved (0); then `n` records sorted by
    /// address, each a u64 VRAM address followed by chunk-size bytes of data.
    /// Chunks not in the dump were never written and read as poison.
    ///
    /// # Errors
    ///
    /// Any error from `w`.
    pub fn dump(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut keys: Vec<u64> = self.chunks.keys().copied().collect();
        keys.sort_unstable();
        w.write_all(DUMP_MAGIC)?;
        w.write_all(&1u32.to_le_bytes())?;
        // CAST: CHUNK_SIZE is 64 KiB.
        w.write_all(&(CHUNK_SIZE as u32).to_le_bytes())?;
        w.write_all(&self.size.to_le_bytes())?;
        // CAST: a chunk count fits in u64.
        w.write_all(&(keys.len() as u64).to_le_bytes())?;
        w.write_all(&POISON.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        for k in keys {
            w.write_all(&(k * CHUNK_SIZE).to_le_bytes())?;
            if let Some(data) = self.chunks.get(&k) {
                w.write_all(data)?;
            }
        }
        Ok(())
    }

    /// Reads a dump written by [`Vram::dump`]; chunks it does not list read
    /// as poison.
    ///
    /// The header must match what `dump` writes (magic, version 1, chunk
    /// size 65536, poison 0xdeadbeef; the reserved word is ignored), the
    /// records must be chunk-aligned, inside VRAM and strictly ascending,
    /// and nothing may follow the last record.
    ///
    /// # Errors
    ///
    /// [`LoadError::Io`] when reading fails, [`LoadError::Invalid`] when the
    /// bytes are not a valid dump.
    pub fn load(r: &mut dyn Read) -> Result<Vram, LoadError> {
        let mut h = [0u8; 40];
        read_part(r, &mut h, "40-byte header")?;
        if &h[0..8] != DUMP_MAGIC {
            return Err(invalid("bad magic (expected \"NVMMVRAM\")"));
        }
        let version = le_u32(&h[8..]);
        if version != 1 {
            return Err(invalid(format!(
                "unsupported version {version} (expected 1)"
            )));
        }
        let chunk = le_u32(&h[12..]);
        if u64::from(chunk) != CHUNK_SIZE {
            return Err(invalid(format!(
                "chunk size {chunk} (expected {CHUNK_SIZE})"
            )));
        }
        let size = le_u64(&h[16..]);
        let count = le_u64(&h[24..]);
        let poison = le_u32(&h[32..]);
        if poison != POISON {
            return Err(invalid(format!(
                "poison value {poison:#010x} (expected {POISON:#010x})"
            )));
        }
        let max_chunks = size.div_ceil(CHUNK_SIZE);
        if count > max_chunks {
            return Err(invalid(format!(
                "{count} chunks listed, but {size:#x} bytes of VRAM hold only {max_chunks}"
            )));
        }
        let mut vram = Vram::new(size);
        let mut prev: Option<u64> = None;
        for i in 0..count {
            let mut a = [0u8; 8];
            read_part(r, &mut a, &format!("address of record {i}"))?;
            let addr = u64::from_le_bytes(a);
            if addr % CHUNK_SIZE != 0 || addr >= size {
                return Err(invalid(format!(
                    "record {i}: address {addr:#x} is not a chunk of the {size:#x} bytes of VRAM"
                )));
            }
            let key = addr / CHUNK_SIZE;
            if prev.is_some_and(|p| p >= key) {
                return Err(invalid(format!(
                    "record {i}: address {addr:#x} is not above the previous record's"
                )));
            }
            prev = Some(key);
            // CAST: CHUNK_SIZE is 64 KiB.
            let mut data = vec![0u8; CHUNK_SIZE as usize].into_boxed_slice();
            read_part(r, &mut data, &format!("data of record {i}"))?;
            // Invariant: `key` is below `max_chunks` (checked above) and the
            // data is one chunk.
            vram.chunks.insert(key, data);
        }
        let mut extra = [0u8; 1];
        loop {
            match r.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => return Err(invalid(format!("trailing bytes after the {count} records"))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LoadError::Io(e)),
            }
        }
        Ok(vram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_memory_is_poison() {
        let v = Vram::new(1 << 30);
        assert_eq!(v.read_u32(0x1000).unwrap(), POISON);
        assert_eq!(v.read_u64(0x2000).unwrap(), POISON64);
        let mut b = [0u8; 3];
        v.read(0x1001, &mut b).unwrap();
        assert_eq!(b, [0xbe, 0xad, 0xde]);
    }

    #[test]
    fn write_read_across_chunks() {
        let mut v = Vram::new(1 << 20);
        let data: Vec<u8> = (0..100u8).collect();
        v.write(CHUNK_SIZE - 50, &data).unwrap();
        let mut back = vec![0u8; 100];
        v.read(CHUNK_SIZE - 50, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(v.touched_chunks(), 2);
        // The rest of a touched chunk is still poison.
        assert_eq!(v.read_u32(0).unwrap(), POISON);
    }

    #[test]
    fn out_of_range() {
        let mut v = Vram::new(1 << 20);
        assert!(v.write((1 << 20) - 2, &[0; 4]).is_err());
        assert!(v.read(u64::MAX - 1, &mut [0; 4]).is_err());
        assert_eq!(v.touched_chunks(), 0);
    }

    #[test]
    fn dump_format() {
        let mut v = Vram::new(1 << 20);
        v.write(0x10000 + 8, &[1, 2, 3, 4]).unwrap();
        let mut out = Vec::new();
        v.dump(&mut out).unwrap();
        assert_eq!(&out[0..8], DUMP_MAGIC);
        assert_eq!(out.len(), 40 + 8 + CHUNK_SIZE as usize);
        assert_eq!(u64::from_le_bytes(out[40..48].try_into().unwrap()), 0x10000);
        assert_eq!(&out[48 + 8..48 + 12], &[1, 2, 3, 4]);
    }

    fn dumped(v: &Vram) -> Vec<u8> {
        let mut out = Vec::new();
        v.dump(&mut out).unwrap();
        out
    }

    #[test]
    fn load_round_trip() {
        let mut v = Vram::new(1 << 30);
        v.write(0x3_0000 - 4, &[9; 8]).unwrap();
        v.write(0x2000_0000, &[7; 3]).unwrap();
        let out = dumped(&v);
        let back = Vram::load(&mut out.as_slice()).unwrap();
        assert_eq!(back.size(), 1 << 30);
        assert_eq!(back.touched_chunks(), 3);
        assert_eq!(back.read_u64(0x3_0000 - 4).unwrap(), 0x0909_0909_0909_0909);
        let mut b = [0u8; 4];
        back.read(0x2000_0000, &mut b).unwrap();
        assert_eq!(b, [7, 7, 7, 0xde]);
        // Unlisted chunks and the untouched rest of a chunk are poison.
        assert_eq!(back.read_u64(0x1000_0000).unwrap(), POISON64);
        assert_eq!(back.read_u32(0x2_0000).unwrap(), POISON);
        assert_eq!(dumped(&back), out);
        // An empty dump.
        let e = Vram::load(&mut dumped(&Vram::new(1 << 20)).as_slice()).unwrap();
        assert_eq!((e.size(), e.touched_chunks()), (1 << 20, 0));
    }

    #[test]
    fn load_rejects_bad_dumps() {
        let mut v = Vram::new(1 << 20);
        v.write(0, &[1]).unwrap();
        v.write(0x2_0000, &[2]).unwrap();
        let good = dumped(&v);
        let rec = 8 + CHUNK_SIZE as usize;
        let err = |d: &[u8]| match Vram::load(&mut &d[..]) {
            Err(LoadError::Invalid(m)) => m,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(err(&good[..39]).contains("header"));
        assert!(err(&good[..good.len() - 1]).contains("record 1"));
        let mut d = good.clone();
        d.push(0);
        assert!(err(&d).contains("trailing"));
        let patch = |off: usize, bytes: &[u8]| {
            let mut d = good.clone();
            d[off..off + bytes.len()].copy_from_slice(bytes);
            d
        };
        assert!(err(&patch(0, b"NVMMVRAX")).contains("magic"));
        assert!(err(&patch(8, &2u32.to_le_bytes())).contains("version"));
        assert!(err(&patch(12, &4096u32.to_le_bytes())).contains("chunk size"));
        assert!(err(&patch(32, &0u32.to_le_bytes())).contains("poison"));
        assert!(err(&patch(24, &17u64.to_le_bytes())).contains("hold only 16"));
        // Unsorted, duplicate, misaligned and out-of-range addresses.
        assert!(err(&patch(40 + rec, &0u64.to_le_bytes())).contains("previous"));
        assert!(err(&patch(40, &0x3_0000u64.to_le_bytes())).contains("previous"));
        assert!(err(&patch(40, &0x100u64.to_le_bytes())).contains("not a chunk"));
        assert!(err(&patch(40 + rec, &(1u64 << 20).to_le_bytes())).contains("not a chunk"));
        // The reserved word is ignored.
        assert!(Vram::load(&mut &patch(36, &5u32.to_le_bytes())[..]).is_ok());
    }
}
