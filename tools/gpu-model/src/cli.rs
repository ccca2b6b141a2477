// SPDX-License-Identifier: MIT OR Apache-2.0

//! Command-line parsing.

use std::path::PathBuf;

use crate::chip::Chip;
use crate::gpu::{Config, Faults};
use crate::report::Kind;
use crate::walk::WalkOptions;

/// Usage text.
pub const USAGE: &str = "\
usage: gpu-model --chip <tu102|ga102|ad102|gh100|gb202> --socket <path>
                 [--vram <size>] [--bar1 <size>] [--report <path>]
                 [--control <path>] [--expect <kind>]... [--wpr2]
                 [--invalidate-delay <n>] [--fault <fault>]...
                 [--dump-vram <path>] [--trace-invalidates] [--hostile <seed>] [--pdbs-file <path>]
       gpu-model walk --chip <tu102|ga102|ad102|gh100|gb202> --dump <file>
                 [--queries <file>]
       gpu-model chips [--json]
sizes take a K, M, G or T suffix (powers of 1024)
faults: invalidate-hang, device-gone, unknown-chip, boot-incomplete, disconnect-after=<n>
hostile: <seed> (u64, decimal or 0x hex) draws the firmware registers at random,
         anew at every device reset (the scenario of each epoch is logged)
walk: one \"<pdb> <va>\" query per line (hex with 0x) from --queries or stdin
chips: the modelled chips, one line each: name, chipset code, architecture, MMU version,
       default VRAM in GiB, board (--json: the same as a JSON array)";

/// Everything the program needs to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Model configuration.
    pub config: Config,
    /// vfio-user socket path.
    pub socket: PathBuf,
    /// Report path.
    pub report: Option<PathBuf>,
    /// Control socket path.
    pub control: Option<PathBuf>,
    /// VRAM dump path written at exit.
    pub dump_vram: Option<PathBuf>,
    /// Install signal handlers (SIGUSR1 report, SIGTERM/SIGINT exit).
    pub signals: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the model.
    Run(Box<Options>),
    /// Walk the page tables of a VRAM dump (`gpu-model walk`).
    Walk(WalkOptions),
    /// Print the modelled chips (`gpu-model chips`), as JSON with `--json`.
    Chips {
        /// JSON instead of one line per chip.
        json: bool,
    },
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Parses a size with an optional K/M/G/T suffix (binary units).
///
/// # Errors
///
/// A message when the text is not a size or overflows.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        num.parse::<u64>()
    }
    .map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a `--hostile` seed: a u64, decimal or `0x` hex.
fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse::<u64>(),
    }
    .map_err(|_| format!("invalid --hostile seed {s:?} (a u64)"))
}

fn parse_fault(s: &str, f: &mut Faults) -> Result<(), String> {
    match s {
        "invalidate-hang" => f.invalidate_hang = true,
        "device-gone" => f.device_gone = true,
        "unknown-chip" => f.unknown_chip = true,
        "boot-incomplete" => f.boot_incomplete = true,
        "invalidate-in-flight" => f.invalidate_in_flight = true,
        _ => {
            let Some(n) = s.strip_prefix("disconnect-after=") else {
                return Err(format!("unknown fault {s:?}"));
            };
            let n = n
                .parse::<u64>()
                .map_err(|_| format!("invalid access count in {s:?}"))?;
            f.disconnect_after = Some(n);
        }
    }
    Ok(())
}

fn parse_chip(value: &str) -> Result<&'static Chip, String> {
    Chip::by_name(value).ok_or_else(|| {
        format!(
            "unknown chip {value:?} (known: {})",
            Chip::names().join(", ")
        )
    })
}

/// Parses the arguments of `gpu-model walk` (after `walk`).
fn parse_walk(args: &[String]) -> Result<Command, String> {
    let mut chip = None;
    let mut dump = None;
    let mut queries = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if matches!(name, "-h" | "--help") {
            return Ok(Command::Help);
        }
        if !matches!(name, "--chip" | "--dump" | "--queries") {
            return Err(format!("walk: unknown option {name}"));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("walk: {name} needs a value"))?;
                i += 1;
                v
            }
        };
        match name {
            "--chip" => chip = Some(parse_chip(&value)?),
            "--dump" => dump = Some(PathBuf::from(value)),
            _ => queries = Some(PathBuf::from(value)),
        }
    }
    Ok(Command::Walk(WalkOptions {
        chip: chip.ok_or("walk: --chip is required")?,
        dump: dump.ok_or("walk: --dump is required")?,
        queries,
    }))
}

/// Parses the arguments (without the program name).
///
/// # Errors
///
/// A message for the user.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.first().is_some_and(|a| a == "walk") {
        return parse_walk(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "chips") {
        return match &args[1..] {
            [] => Ok(Command::Chips { json: false }),
            [j] if j == "--json" => Ok(Command::Chips { json: true }),
            _ => Err("chips takes only --json".into()),
        };
    }
    let mut chip = None;
    let mut socket = None;
    let mut vram = None;
    let mut bar1 = None;
    let mut report = None;
    let mut control = None;
    let mut dump = None;
    let mut expect = Vec::new();
    let mut wpr2 = false;
    let mut trace_invalidates = false;
    let mut delay = None;
    let mut hostile = None;
    let mut pdbs_file = None;
    let mut faults = Faults::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let flag = |v: &Option<String>| -> Result<(), String> {
            if v.is_some() {
                Err(format!("{name} takes no value"))
            } else {
                Ok(())
            }
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--wpr2" => {
                flag(&inline)?;
                wpr2 = true;
                continue;
            }
            "--trace-invalidates" => {
                flag(&inline)?;
                trace_invalidates = true;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))?;
                i += 1;
                v
            }
        };
        match name {
            "--chip" => chip = Some(parse_chip(&value)?),
            "--socket" => socket = Some(PathBuf::from(value)),
            "--vram" => vram = Some(parse_size(&value)?),
            "--bar1" => bar1 = Some(parse_size(&value)?),
            "--report" => report = Some(PathBuf::from(value)),
            "--control" => control = Some(PathBuf::from(value)),
            "--dump-vram" => dump = Some(PathBuf::from(value)),
            "--expect" => expect.push(Kind::parse(&value).ok_or_else(|| {
                format!(
                    "unknown violation kind {value:?} (known: {})",
                    Kind::ALL.map(|k| k.name()).join(", ")
                )
            })?),
            "--invalidate-delay" => {
                delay = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("invalid --invalidate-delay {value:?}"))?,
                )
            }
            "--fault" => parse_fault(&value, &mut faults)?,
            "--hostile" => hostile = Some(parse_seed(&value)?),
            "--pdbs-file" => pdbs_file = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {name}")),
        }
    }
    let chip = chip.ok_or("--chip is required")?;
    let socket = socket.ok_or("--socket is required")?;
    let mut config = Config::new(chip);
    if let Some(v) = vram {
        config.vram_bytes = v;
    }
    if let Some(b) = bar1 {
        if !b.is_power_of_two() || !(1 << 20..=1 << 40).contains(&b) {
            return Err(format!(
                "--bar1 {b:#x} must be a power of two between 1M and 1T"
            ));
        }
        config.bar1_bytes = b;
    }
    if let Some(d) = delay {
        config.invalidate_delay = d;
    }
    config.wpr2 = wpr2;
    config.trace_invalidates = trace_invalidates;
    config.faults = faults;
    config.hostile = hostile;
    config.pdbs_file = pdbs_file;
    config.expect = expect;
    Ok(Command::Run(Box::new(Options {
        config,
        socket,
        report,
        control,
        dump_vram: dump,
        signals: true,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("24G"), Ok(24 << 30));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn full_command_line() {
        let c = parse(&args(
            "--chip gh100 --socket /tmp/s --vram 1G --bar1=512M --report r.json \
             --control c.sock --expect bar1_fault --expect stale_tlb --wpr2 \
             --invalidate-delay 3 --fault invalidate-hang --fault disconnect-after=10 \
             --dump-vram d.bin --trace-invalidates",
        ))
        .unwrap();
        let Command::Run(o) = c else { panic!() };
        assert!(o.config.trace_invalidates);
        assert_eq!(o.config.chip.name, "gh100");
        assert_eq!(o.config.vram_bytes, 1 << 30);
        assert_eq!(o.config.bar1_bytes, 512 << 20);
        assert_eq!(o.config.invalidate_delay, 3);
        assert!(o.config.wpr2);
        assert!(o.config.faults.invalidate_hang);
        assert_eq!(o.config.faults.disconnect_after, Some(10));
        assert_eq!(o.config.expect, vec![Kind::Bar1Fault, Kind::StaleTlb]);
        assert_eq!(o.dump_vram, Some(PathBuf::from("d.bin")));
    }

    #[test]
    fn defaults_and_errors() {
        let Command::Run(o) = parse(&args("--chip ga102 --socket s")).unwrap() else {
            panic!()
        };
        assert_eq!(o.config.vram_bytes, 24 << 30);
        assert_eq!(o.config.bar1_bytes, 256 << 20);
        assert_eq!(o.config.invalidate_delay, 1);
        assert!(!o.config.trace_invalidates);
        assert!(parse(&args("--socket s")).is_err());
        assert!(parse(&args("--chip nv50 --socket s")).is_err());
        assert!(parse(&args("--chip ga102 --socket s --bar1 3M")).is_err());
        assert!(parse(&args("--chip ga102 --socket s --fault melt")).is_err());
        assert!(parse(&args("--chip ga102 --socket s --expect nothing")).is_err());
        assert!(parse(&args("--chip ga102 --socket")).is_err());
        assert!(parse(&args("--chip ga102 --socket s --wpr2=1")).is_err());
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
    }

    #[test]
    fn trace_invalidates_flag() {
        for line in [
            "--trace-invalidates --chip ga102 --socket s",
            "--chip ga102 --trace-invalidates --socket s --invalidate-delay 0",
            "--chip ga102 --socket s --trace-invalidates",
        ] {
            let Command::Run(o) = parse(&args(line)).unwrap() else {
                panic!("{line}")
            };
            assert!(o.config.trace_invalidates, "{line}");
        }
        // A boolean flag: it takes no value and does not consume the next
        // argument.
        for bad in [
            "--chip ga102 --socket s --trace-invalidates=1",
            "--chip ga102 --socket s --trace-invalidates=",
            "--chip ga102 --trace-invalidates s",
            "--chip ga102 --socket s --trace-invalidate",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_seed() {
        let Command::Run(o) = parse(&args("--chip ga102 --socket s")).unwrap() else {
            panic!()
        };
        assert_eq!(o.config.hostile, None);
        for (line, seed) in [
            ("--chip ga102 --socket s --hostile 42", 42),
            ("--chip ga102 --hostile=7 --socket s", 7),
            ("--hostile 0x10 --chip ga102 --socket s", 16),
            (
                "--chip ga102 --socket s --hostile=18446744073709551615",
                u64::MAX,
            ),
        ] {
            let Command::Run(o) = parse(&args(line)).unwrap() else {
                panic!("{line}")
            };
            assert_eq!(o.config.hostile, Some(seed), "{line}");
        }
        for bad in [
            "--chip ga102 --socket s --hostile",
            "--chip ga102 --socket s --hostile=",
            "--chip ga102 --socket s --hostile -1",
            "--chip ga102 --socket s --hostile x",
            "--chip ga102 --socket s --hostile 18446744073709551616",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn walk_command_line() {
        let Command::Walk(w) = parse(&args("walk --chip gh100 --dump d.bin")).unwrap() else {
            panic!()
        };
        assert_eq!(w.chip.name, "gh100");
        assert_eq!(w.dump, PathBuf::from("d.bin"));
        assert_eq!(w.queries, None);
        let Command::Walk(w) =
            parse(&args("walk --queries=q.txt --dump=d.bin --chip=tu102")).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.chip.name, "tu102");
        assert_eq!(w.queries, Some(PathBuf::from("q.txt")));
        assert!(matches!(parse(&args("walk --help")), Ok(Command::Help)));
        for bad in [
            "walk",
            "walk --dump d.bin",
            "walk --chip ga102",
            "walk --chip nv50 --dump d",
            "walk --chip ga102 --dump",
            "walk --chip ga102 --dump d --socket s",
            "walk --chip ga102 --dump d extra",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        // `walk` is a subcommand only in first position.
        assert!(parse(&args("--chip ga102 walk")).is_err());
    }

    #[test]
    fn chips_command_line() {
        assert!(matches!(
            parse(&args("chips")),
            Ok(Command::Chips { json: false })
        ));
        assert!(matches!(
            parse(&args("chips --json")),
            Ok(Command::Chips { json: true })
        ));
        assert!(parse(&args("chips --xml")).is_err());
        assert!(parse(&args("chips --json --json")).is_err());
    }
}
