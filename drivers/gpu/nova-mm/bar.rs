// SPDX-License-Identifier: GPL-2.0

//! BAR0 with every access counted.
//!
//! [`Bar0`] wraps the mapped PCI BAR and offers the accessors nova-mm uses (typed register reads
//! and writes, 32- and 64-bit raw accesses), each counting one MMIO read or write. It does not
//! implement [`Io`] itself, so no access can bypass the count: the counts in debugfs are every
//! BAR0 access the driver made, and the test harness checks them against the GPU model's.

use kernel::{
    device::Bound,
    io::{
        register::LocatedRegister,
        Io,
        IoCapable,
        IoLoc,
        MmioBackend,
        Region, //
    },
    pci,
    prelude::*,
    sizes::SZ_16M,
    sync::{atomic::Relaxed, Arc},
};

/// Size of the BAR0 mapping: all of the GPU's registers and the PRAMIN aperture.
pub(crate) const BAR0_SIZE: usize = SZ_16M;

counters! {
    /// Counts of BAR0 accesses.
    pub(crate) struct MmioStats / MmioSnapshot {
        /// MMIO reads.
        reads,
        /// MMIO writes.
        writes,
    }
}

impl MmioStats {
    /// No access yet, shared (the driver and the harness read the counts).
    pub(crate) fn new_shared() -> Result<Arc<Self>> {
        Ok(Arc::new(Self::new(), GFP_KERNEL)?)
    }
}

/// The mapped BAR0 of a GPU, counting every access.
pub(crate) struct Bar0<'a> {
    bar: pci::Bar<'a, BAR0_SIZE>,
    stats: Arc<MmioStats>,
    pdev: &'a pci::Device<Bound>,
}

impl<'a> Bar0<'a> {
    /// Wraps the mapped BAR0 of `pdev`, counting its accesses in `stats`.
    pub(crate) fn new(
        pdev: &'a pci::Device<Bound>,
        bar: pci::Bar<'a, BAR0_SIZE>,
        stats: Arc<MmioStats>,
    ) -> Self {
        Self { bar, stats, pdev }
    }

    /// Returns the GPU's device, for messages.
    pub(crate) fn dev(&self) -> &'a kernel::device::Device<Bound> {
        self.pdev.as_ref()
    }

    /// Returns the access counters.
    pub(crate) fn stats(&self) -> &Arc<MmioStats> {
        &self.stats
    }

    fn count_read(&self) {
        self.stats.reads.fetch_add(1, Relaxed);
    }

    fn count_write(&self) {
        self.stats.writes.fetch_add(1, Relaxed);
    }

    /// Reads the register at `location` (offset checked at build time).
    pub(crate) fn read<T, L>(&self, location: L) -> T
    where
        L: IoLoc<Region<BAR0_SIZE>, T>,
        MmioBackend: IoCapable<L::IoType>,
    {
        self.count_read();
        (&self.bar).read(location)
    }

    /// Reads the register at `location`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the location is outside BAR0.
    pub(crate) fn try_read<T, L>(&self, location: L) -> Result<T>
    where
        L: IoLoc<Region<BAR0_SIZE>, T>,
        MmioBackend: IoCapable<L::IoType>,
    {
        let v = (&self.bar).try_read(location)?;
        self.count_read();
        Ok(v)
    }

    /// Writes the register value `value` to its location.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the location is outside BAR0.
    pub(crate) fn try_write_reg<T, L, V>(&self, value: V) -> Result
    where
        L: IoLoc<Region<BAR0_SIZE>, T>,
        V: LocatedRegister<Region<BAR0_SIZE>, Location = L, Value = T>,
        MmioBackend: IoCapable<L::IoType>,
    {
        (&self.bar).try_write_reg(value)?;
        self.count_write();
        Ok(())
    }

    /// Reads 32 bits at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the access is misaligned or outside BAR0.
    pub(crate) fn try_read32(&self, offset: usize) -> Result<u32> {
        let v = (&self.bar).try_read32(offset)?;
        self.count_read();
        Ok(v)
    }

    /// Writes 32 bits at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the access is misaligned or outside BAR0.
    pub(crate) fn try_write32(&self, value: u32, offset: usize) -> Result {
        (&self.bar).try_write32(value, offset)?;
        self.count_write();
        Ok(())
    }

    /// Reads 64 bits at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the access is misaligned or outside BAR0.
    pub(crate) fn try_read64(&self, offset: usize) -> Result<u64> {
        let v = (&self.bar).try_read64(offset)?;
        self.count_read();
        Ok(v)
    }

    /// Writes 64 bits at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the access is misaligned or outside BAR0.
    pub(crate) fn try_write64(&self, value: u64, offset: usize) -> Result {
        (&self.bar).try_write64(value, offset)?;
        self.count_write();
        Ok(())
    }
}
