// SPDX-License-Identifier: MIT OR Apache-2.0

//! The vfio-user device backend: routes region accesses to the model.
//!
//! Implements `vfio_user::ServerBackend`, the rust-vmm trait, so the same
//! backend can run under the crate's `Server`; this project drives it with
//! its own hardened message loop ([`crate::protocol`]).

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};

use crate::gpu::Gpu;
use crate::pci::{self, ConfigSpace};

/// Locks the shared model, ignoring poisoning (the model never panics, and
/// a report is still wanted if something did).
pub fn lock(gpu: &Mutex<Gpu>) -> MutexGuard<'_, Gpu> {
    gpu.lock().unwrap_or_else(|e| e.into_inner())
}

/// The device as the vfio-user server sees it.
pub struct Backend {
    /// The shared model.
    pub gpu: Arc<Mutex<Gpu>>,
    config: ConfigSpace,
    regions: Vec<pci::RegionInfo>,
    intx: Option<File>,
    dma_maps: u64,
    disconnect: bool,
}

fn einval(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Backend {
    /// A backend for `gpu`.
    pub fn new(gpu: Arc<Mutex<Gpu>>) -> Self {
        let (chip, bar1) = {
            let g = lock(&gpu);
            (g.chip, g.cfg.bar1_bytes)
        };
        Backend {
            config: ConfigSpace::new(chip, bar1),
            regions: pci::regions(bar1),
            gpu,
            intx: None,
            dma_maps: 0,
            disconnect: false,
        }
    }

    /// The region table.
    pub fn regions(&self) -> &[pci::RegionInfo] {
        &self.regions
    }

    /// Whether fault injection asks the server to drop the connection.
    pub fn disconnect_requested(&self) -> bool {
        self.disconnect
    }

    fn check_range(&self, region: u32, offset: u64, len: usize) -> io::Result<()> {
        let size = self
            .regions
            .iter()
            .find(|r| r.index == region)
            .map_or(0, |r| r.size);
        // CAST: message payloads are at most 1 MiB.
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if size > 0 && end <= size => Ok(()),
            _ => Err(einval(format!(
                "access of {len} bytes at {offset:#x} outside region {region} ({size:#x} bytes)"
            ))),
        }
    }

    fn after_bar_access(&mut self, gpu: &Gpu) {
        if let Some(n) = gpu.cfg.faults.disconnect_after {
            if gpu.accesses >= n {
                self.disconnect = true;
            }
        }
    }
}

/// Splits a BAR0 access into naturally sized pieces.
fn bar0_pieces(offset: u64, len: usize) -> Vec<(u64, usize)> {
    // CAST: `len` is at most 1 MiB.
    if matches!(len, 1 | 2 | 4 | 8) && offset % (len as u64) == 0 {
        return vec![(offset, len)];
    }
    let mut v = Vec::new();
    let mut o = offset;
    let end = offset.saturating_add(len as u64);
    while o < end {
        let n = if o % 4 == 0 && end - o >= 4 { 4 } else { 1 };
        v.push((o, n));
        // CAST: n is 1 or 4.
        o += n as u64;
    }
    v
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.check_range(region, offset, data.len())?;
        let gpu = Arc::clone(&self.gpu);
        let mut g = lock(&gpu);
        match region {
            pci::REGION_BAR0 => {
                let mut pos = 0usize;
                for (o, n) in bar0_pieces(offset, data.len()) {
                    let v = g.bar0_read(o, n);
                    data[pos..pos + n].copy_from_slice(&v.to_le_bytes()[..n]);
                    pos += n;
                }
                self.after_bar_access(&g);
            }
            pci::REGION_BAR1 => {
                g.bar1_read(offset, data);
                self.after_bar_access(&g);
            }
            pci::REGION_CONFIG => {
                g.rec.counters.config_reads += 1;
                self.config.read(offset, data);
            }
            _ => return Err(einval(format!("region {region} is not readable"))),
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_range(region, offset, data.len())?;
        let gpu = Arc::clone(&self.gpu);
        let mut g = lock(&gpu);
        match region {
            pci::REGION_BAR0 => {
                let mut pos = 0usize;
                for (o, n) in bar0_pieces(offset, data.len()) {
                    let mut b = [0u8; 8];
                    b[..n].copy_from_slice(&data[pos..pos + n]);
                    g.bar0_write(o, n, u64::from_le_bytes(b));
                    pos += n;
                }
                self.after_bar_access(&g);
            }
            pci::REGION_BAR1 => {
                g.bar1_write(offset, data);
                self.after_bar_access(&g);
            }
            pci::REGION_CONFIG => {
                g.rec.counters.config_writes += 1;
                self.config.write(offset, data);
            }
            _ => return Err(einval(format!("region {region} is not writable"))),
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        _offset: u64,
        _address: u64,
        _size: u64,
        _fd: Option<File>,
    ) -> io::Result<()> {
        // The model does no DMA; the mapping is accepted and its fd closed.
        self.dma_maps += 1;
        Ok(())
    }

    fn dma_unmap(&mut self, _flags: DmaUnmapFlags, _address: u64, _size: u64) -> io::Result<()> {
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        lock(&self.gpu).reset();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        _flags: u32,
        _start: u32,
        _count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        // The model never raises an interrupt; keep the INTx eventfd so the
        // client sees it accepted.
        if index == 0 {
            self.intx = fds.into_iter().next();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces() {
        assert_eq!(bar0_pieces(0x1000, 4), vec![(0x1000, 4)]);
        assert_eq!(
            bar0_pieces(0x1002, 4),
            vec![(0x1002, 1), (0x1003, 1), (0x1004, 1), (0x1005, 1)]
        );
        assert_eq!(
            bar0_pieces(0x1000, 12),
            vec![(0x1000, 4), (0x1004, 4), (0x1008, 4)]
        );
    }
}
