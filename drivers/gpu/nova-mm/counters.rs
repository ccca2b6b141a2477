// SPDX-License-Identifier: GPL-2.0

//! Counter sets: one definition gives the counters, a snapshot of them, and their debugfs lines.

/// Defines a set of `u64` event counters.
///
/// `counters! { /// Doc. pub(crate) struct Name / NameSnapshot { /// Doc. field, ... } }`
/// defines `Name`, whose fields are [`kernel::sync::atomic::Atomic<u64>`] counters starting at
/// zero, and `NameSnapshot`, a copy of their values at one moment. `Name::snapshot()` takes one
/// (each counter read once, relaxed); `Name::show()` writes a `<prefix>field: value` line per counter,
/// in the order defined (what debugfs shows); snapshots subtract field by field (`later -
/// earlier`), so that a test or a benchmark states what one operation cost.
#[allow(unused_macros)]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident / $snap:ident {
            $($(#[$fmeta:meta])* $field:ident),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$fmeta])* $vis $field: kernel::sync::atomic::Atomic<u64>,)*
        }

        #[doc = concat!("The values of a [`", stringify!($name), "`] at one moment.")]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[allow(dead_code)]
        $vis struct $snap {
            $($(#[$fmeta])* $vis $field: u64,)*
        }

        #[allow(dead_code)]
        impl $name {
            /// Every counter at zero.
            $vis const fn new() -> Self {
                Self {
                    $($field: kernel::sync::atomic::Atomic::new(0),)*
                }
            }

            /// Reads every counter once.
            $vis fn snapshot(&self) -> $snap {
                $snap {
                    $($field: self.$field.load(kernel::sync::atomic::Relaxed),)*
                }
            }

            /// Writes a `<prefix><name>: value` line per counter.
            $vis fn show(
                &self,
                f: &mut kernel::fmt::Formatter<'_>,
                prefix: &str,
            ) -> kernel::fmt::Result {
                let s = self.snapshot();
                $(writeln!(f, "{}{}: {}", prefix, stringify!($field), s.$field)?;)*
                Ok(())
            }
        }

        impl core::ops::Sub for $snap {
            type Output = $snap;

            /// The counts between `rhs` (earlier) and `self` (later).
            fn sub(self, rhs: $snap) -> $snap {
                $snap {
                    $($field: self.$field.wrapping_sub(rhs.$field),)*
                }
            }
        }
    };
}
