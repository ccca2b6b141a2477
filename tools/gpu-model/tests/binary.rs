// SPDX-License-Identifier: MIT OR Apache-2.0

//! The command-line contract: run the `gpu-model` binary, talk vfio-user and
//! the control protocol to it, and check its outputs and exit codes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpu-model");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-model-bin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("gpu-model did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn control(path: &Path, cmd: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

#[test]
fn runs_reports_and_quits() {
    let d = tmpdir("run");
    let sock = d.join("gpu.sock");
    let ctl = d.join("ctl.sock");
    let report = d.join("report.json");
    // A stale socket file is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut child = Command::new(BIN)
        .args([
            "--chip",
            "ad102",
            "--vram",
            "1G",
            "--bar1",
            "64M",
            "--expect",
            "bar1_fault",
        ])
        .arg("--socket")
        .arg(&sock)
        .arg("--control")
        .arg(&ctl)
        .arg("--report")
        .arg(&report)
        .arg("--dump-vram")
        .arg(d.join("vram.bin"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ctl);
    let mut client = vfio_user::Client::new(&sock).unwrap();
    assert_eq!(client.region(1).unwrap().size, 64 << 20);
    let mut b = [0u8; 4];
    client.region_read(0, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x1920_00a1);
    client.region_read(1, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0);
    assert_eq!(control(&ctl, "report"), "ok");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["chip"], "ad102");
    assert_eq!(r["violation_counts"]["bar1_fault"], 1);
    assert_eq!(r["unexpected_violations"], 0);
    // SIGUSR1 rewrites the report.
    std::fs::remove_file(&report).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    wait_for(&report);
    assert_eq!(
        control(&ctl, "status"),
        "ok unexpected=0 violations=1 accesses=2"
    );
    assert_eq!(control(&ctl, "quit"), "ok");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(!sock.exists() && !ctl.exists());
    assert_eq!(
        &std::fs::read(d.join("vram.bin")).unwrap()[..8],
        b"NVMMVRAM"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with("gpu-model: chip ad102") && first.contains("VRAM 1 GiB"),
        "{first}"
    );
    drop(client);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn exits_zero_when_the_client_disconnects() {
    let d = tmpdir("disconnect");
    let sock = d.join("gpu.sock");
    let report = d.join("r.json");
    let mut child = Command::new(BIN)
        .args(["--chip", "tu102", "--vram", "11G"])
        .arg("--socket")
        .arg(&sock)
        .arg("--report")
        .arg(&report)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock);
    let client = vfio_user::Client::new(&sock).unwrap();
    drop(client);
    assert_eq!(wait_exit(&mut child), 0);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["vram_bytes"], 11u64 << 30);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn trace_invalidates_in_the_report() {
    let d = tmpdir("trace");
    let sock = d.join("gpu.sock");
    let report = d.join("r.json");
    let mut child = Command::new(BIN)
        .args(["--chip", "ga102", "--vram", "1G", "--trace-invalidates"])
        .arg("--socket")
        .arg(&sock)
        .arg("--report")
        .arg(&report)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock);
    let mut client = vfio_user::Client::new(&sock).unwrap();
    // Window to 16 MiB, one PRAMIN write, then TRIGGER | ALL_PDB | ALL_VA on
    // MMU_INVALIDATE, polled until TRIGGER clears (delay 1: two polls).
    client
        .region_write(0, 0x1700, &0x100u32.to_le_bytes())
        .unwrap();
    client
        .region_write(0, 0x70_0000, &7u32.to_le_bytes())
        .unwrap();
    client
        .region_write(0, 0xb8_30b0, &0x8000_0003u32.to_le_bytes())
        .unwrap();
    let mut polls = 0;
    loop {
        let mut b = [0u8; 4];
        client.region_read(0, 0xb8_30b0, &mut b).unwrap();
        polls += 1;
        if u32::from_le_bytes(b) >> 31 == 0 {
            break;
        }
    }
    assert_eq!(polls, 2);
    drop(client);
    assert_eq!(wait_exit(&mut child), 0);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // [n, bar0_reads, bar0_writes, pramin_reads, pramin_writes, window_moves]:
    // the completing poll is the second BAR0 read.
    assert_eq!(
        r["invalidate_trace"],
        serde_json::json!([[1, 2, 3, 0, 1, 1]])
    );
    assert_eq!(r["invalidate_trace_dropped"], 0);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["--chip", "ga102"],
        vec!["--chip", "nv04", "--socket", "/nonexistent/s"],
        vec![
            "--chip",
            "tu102",
            "--socket",
            "/nonexistent/s",
            "--vram",
            "65M",
        ],
    ] {
        let s = Command::new(BIN)
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(s.code(), Some(2), "{args:?}");
    }
}

// --- gpu-model walk ---

/// Hand-built page tables in a 1 GiB VRAM, dumped with the model's own dump
/// writer. Encodings from open-gpu-doc `dev_mmu.ref.txt` (v2) and nvhw
/// `gh100/dev_mmu.h` (v3). Tables at 0x100000 + n * 4 KiB, PDB 0x100000;
/// returns the dump and the address of the PDE1 table.
fn walk_dump(v3: bool) -> (Vec<u8>, u64) {
    use gpu_model::vram::Vram;
    let mut v = Vram::new(1 << 30);
    let mut w = |a: u64, x: u64| v.write(a, &x.to_le_bytes()).unwrap();
    // PDE: APERTURE 2:1 = VIDEO_MEMORY; v2 ADDRESS_VID 32:8, v3 PCF 5:3 = 2
    // and ADDRESS 51:12. The small half of a dual PDE has the same layout.
    let pde = |t: u64| {
        if v3 {
            2 | (2 << 3) | t
        } else {
            2 | ((t >> 12) << 8)
        }
    };
    // Dual PDE big half: v2 ADDRESS_BIG_VID 32:4 (addr >> 8), v3 51:8.
    let big = |t: u64| {
        if v3 {
            2 | (2 << 3) | t
        } else {
            2 | ((t >> 8) << 4)
        }
    };
    // PTE: VALID 0, aperture video; read-only is v2 READ_ONLY 6, v3 PCF 7:3
    // REGULAR_RO_ATOMIC_CACHED_ACE (4).
    let pte = |pa: u64, ro: bool| {
        if v3 {
            // KIND 11:8 = GENERIC_MEMORY (6).
            1 | if ro { 4 << 3 } else { 0 } | (6 << 8) | pa
        } else {
            // KIND 63:56 = GENERIC_MEMORY (6).
            1 | (u64::from(ro) << 6) | ((pa >> 12) << 8) | (6 << 56)
        }
    };
    for t in 0..11u64 {
        for o in (0..0x1000).step_by(8) {
            w(0x10_0000 + t * 0x1000 + o, 0);
        }
    }
    let dirs: u64 = if v3 { 4 } else { 3 };
    for i in 0..dirs - 1 {
        w(0x10_0000 + i * 0x1000, pde(0x10_0000 + (i + 1) * 0x1000));
    }
    let pd1 = 0x10_0000 + (dirs - 1) * 0x1000;
    let (pd0, lpt, spt) = (0x10_8000, 0x10_9100, 0x10_a000);
    w(pd1, pde(pd0));
    w(pd1 + 8, pte(0x2000_0000, false)); // 512 MiB page at VA 512 MiB
    w(pd0, big(lpt)); // VA 0..2 MiB: big and small tables
    w(pd0 + 8, pde(spt));
    w(spt + 8, pte(0x20_0000, true)); // read-only 4 KiB at VA 0x1000
    w(lpt + 8, pte(0x30_0000, false)); // 64 KiB at VA 0x10000
    w(pd0 + 16, pte(0x40_0000, false)); // 2 MiB page at VA 2 MiB
    w(pd0 + 32, 1 << 3); // VA 4 MiB: sparse big half (VOL_BIG / PCF_BIG 1) ...
    w(pd0 + 40, pde(spt)); // ... hides this small table
    let mut out = Vec::new();
    v.dump(&mut out).unwrap();
    (out, pd1)
}

const WALK_QUERIES: &str = "\
# pdb va
0x100000 0x1008
0x100000 0x1fffc

0x100000 0x212345
0x100000 0x20000010
0x100000 0x400000
0x100000 0x40000000
0x100000 nonsense
";

fn walk_expected(pd1: u64, page_512m: bool) -> String {
    let big = if page_512m {
        "0x100000 0x20000010 page pa=0x20000010 size=0x20000000 ro=0 priv=0 kind=0x6".to_string()
    } else {
        // Only TU102 (v2) lacks 512 MiB pages: ADDRESS_VID 32:8 = pa >> 12.
        format!(
            "0x100000 0x20000010 fault PDE1: PTE (IS_PTE set) at {:#x} where this chip \
             allows none: 0x0600000002000001",
            pd1 + 8
        )
    };
    format!(
        "0x100000 0x1008 page pa=0x200008 size=0x1000 ro=1 priv=0 kind=0x6\n\
         0x100000 0x1fffc page pa=0x30fffc size=0x10000 ro=0 priv=0 kind=0x6\n\
         0x100000 0x212345 page pa=0x412345 size=0x200000 ro=0 priv=0 kind=0x6\n\
         {big}\n\
         0x100000 0x400000 sparse size=0x200000\n\
         0x100000 0x40000000 fault PDE1: invalid PDE 0x0000000000000000 at {:#x}\n\
         0x100000 nonsense error VA \"nonsense\" is not a 0x-prefixed 64-bit hex number\n",
        pd1 + 16
    )
}

/// Runs `gpu-model walk` with `input` on stdin; returns (exit code, stdout,
/// stderr).
fn run_walk(args: &[&str], dump: &Path, input: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("walk")
        .args(args)
        .arg("--dump")
        .arg(dump)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Written from a thread: the output pipe may fill before the input ends.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn walk_answers_queries() {
    let d = tmpdir("walk");
    for (chip, v3, page_512m) in [
        ("gh100", true, true),
        ("gb202", true, true),
        ("ga102", false, true),
        ("tu102", false, false),
    ] {
        let (dump, pd1) = walk_dump(v3);
        let path = d.join(format!("{chip}.bin"));
        std::fs::write(&path, dump).unwrap();
        let want = walk_expected(pd1, page_512m);
        // Queries on stdin.
        let (code, out, err) = run_walk(&["--chip", chip], &path, WALK_QUERIES);
        assert_eq!(code, 0, "{chip}: {err}");
        assert_eq!(out, want, "{chip}");
        assert_eq!(err, "", "{chip}");
        // Queries from --queries (stdin is ignored).
        let q = d.join("queries.txt");
        std::fs::write(&q, WALK_QUERIES).unwrap();
        let (code, out, _) = run_walk(
            &["--chip", chip, "--queries", q.to_str().unwrap()],
            &path,
            "0x0 0x0\n",
        );
        assert_eq!(code, 0, "{chip}");
        assert_eq!(out, want, "{chip}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn walk_is_fast() {
    let d = tmpdir("walk-fast");
    let (dump, _) = walk_dump(true);
    let path = d.join("gh100.bin");
    std::fs::write(&path, dump).unwrap();
    let mut input = String::new();
    for i in 0..100_000u64 {
        // Cycle through 4 KiB, 64 KiB, 2 MiB and unmapped VAs.
        let va = [0x1000, 0x1_0000, 0x20_0000, 0x4000_0000][(i % 4) as usize] + (i & 0xff) * 8;
        input.push_str(&format!("0x100000 {va:#x}\n"));
    }
    let start = Instant::now();
    let (code, out, _) = run_walk(&["--chip", "gh100"], &path, &input);
    let took = start.elapsed();
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 100_000);
    assert_eq!(
        out.lines().filter(|l| l.contains(" fault ")).count(),
        25_000
    );
    // Generous for an unoptimised build on a loaded machine; a release
    // build takes a fraction of a second.
    assert!(took < Duration::from_secs(30), "100k queries took {took:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn walk_errors_exit_2() {
    let d = tmpdir("walk-errors");
    let good = d.join("good.bin");
    std::fs::write(&good, walk_dump(false).0).unwrap();
    let bad = d.join("bad.bin");
    std::fs::write(&bad, b"NVMMVRAX and some more bytes to fill the header...").unwrap();
    let truncated = d.join("truncated.bin");
    let mut t = walk_dump(false).0;
    t.truncate(t.len() - 100);
    std::fs::write(&truncated, t).unwrap();
    let missing = d.join("missing.bin");
    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (
            vec!["--chip", "ga102"],
            &missing,
            "cannot read the VRAM dump",
        ),
        (vec!["--chip", "ga102"], &bad, "bad magic"),
        (vec!["--chip", "ga102"], &truncated, "truncated"),
        (vec!["--chip", "nv50"], &good, "unknown chip"),
        (vec![], &good, "--chip is required"),
        (
            vec!["--chip", "ga102", "--queries", "/nonexistent/q"],
            &good,
            "cannot read the query file",
        ),
        (
            vec!["--chip", "ga102", "--socket", "s"],
            &good,
            "unknown option",
        ),
    ];
    for (args, dump, msg) in cases {
        let (code, out, err) = run_walk(&args, dump, "0x100000 0x1000\n");
        assert_eq!(code, 2, "{args:?} {dump:?}: {err}");
        assert_eq!(out, "");
        assert!(err.starts_with("gpu-model: "), "{err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // --dump is required.
    let s = Command::new(BIN)
        .args(["walk", "--chip", "ga102"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(s.code(), Some(2));
    let _ = std::fs::remove_dir_all(&d);
}
