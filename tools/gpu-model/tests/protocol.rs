// SPDX-License-Identifier: MIT OR Apache-2.0

//! Protocol-level tests: the server on a temporary socket, driven by the
//! `vfio_user` crate's client and by hand-made (also malformed) messages.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gpu_model::app::{bind_fresh, serve_one, Shared};
use gpu_model::chip::Chip;
use gpu_model::gpu::{Config, Faults, Gpu};
use gpu_model::protocol::{cmd, Header, HEADER_SIZE};

struct Server {
    dir: PathBuf,
    sock: PathBuf,
    report: PathBuf,
    shared: Arc<Shared>,
    handle: Option<JoinHandle<i32>>,
}

impl Server {
    fn start(name: &str, chip: &str, faults: Faults) -> Server {
        let mut cfg = Config::new(Chip::by_name(chip).unwrap());
        cfg.vram_bytes = 1 << 30;
        cfg.faults = faults;
        Server::start_with(name, cfg)
    }

    fn start_with(name: &str, cfg: Config) -> Server {
        let dir = std::env::temp_dir().join(format!("gpu-model-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("gpu.sock");
        let report = dir.join("report.json");
        let gpu = Arc::new(Mutex::new(Gpu::new(cfg).unwrap()));
        let shared = Arc::new(Shared::new(
            gpu,
            Some(report.clone()),
            None,
            vec![sock.clone()],
        ));
        let listener = bind_fresh(&sock).unwrap();
        let s2 = Arc::clone(&shared);
        let handle = std::thread::spawn(move || {
            let code = serve_one(&s2, &listener);
            s2.finish();
            code
        });
        Server {
            dir,
            sock,
            report,
            shared,
            handle: Some(handle),
        }
    }

    fn wait(&mut self) -> (i32, serde_json::Value) {
        let code = self.handle.take().unwrap().join().unwrap();
        let text = std::fs::read_to_string(&self.report).unwrap();
        (code, serde_json::from_str(&text).unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn message(id: u16, command: u16, body: &[u8]) -> Vec<u8> {
    let h = Header {
        id,
        command,
        size: (HEADER_SIZE + body.len()) as u32,
        flags: 0,
        error: 0,
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn reply(s: &mut UnixStream) -> (Header, Vec<u8>) {
    let mut hb = [0u8; HEADER_SIZE];
    s.read_exact(&mut hb).unwrap();
    let h = Header::parse(&hb);
    let mut body = vec![0u8; h.size as usize - HEADER_SIZE];
    s.read_exact(&mut body).unwrap();
    (h, body)
}

fn region_read_msg(id: u16, region: u32, offset: u64, count: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&region.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    message(id, cmd::REGION_READ, &b)
}

fn read_u32_raw(s: &mut UnixStream, id: u16, region: u32, offset: u64) -> u32 {
    s.write_all(&region_read_msg(id, region, offset, 4))
        .unwrap();
    let (h, body) = reply(s);
    assert_eq!(h.id, id);
    assert_eq!(h.flags & (1 << 5), 0, "error reply {h:?}");
    u32::from_le_bytes(body[16..20].try_into().unwrap())
}

#[test]
fn client_reads_identity_and_boot_registers() {
    let mut srv = Server::start("client", "ga102", Faults::default());
    let mut client = vfio_user::Client::new(&srv.sock).unwrap();
    assert_eq!(client.region(0).unwrap().size, 16 << 20);
    assert_eq!(client.region(1).unwrap().size, 256 << 20);
    assert_eq!(client.region(7).unwrap().size, 256);
    assert!(client.region(0).unwrap().file_offset.is_none());
    assert!(client.region(0).unwrap().sparse_areas.is_empty());
    let mut b = [0u8; 4];
    client.region_read(7, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x2204_10de);
    client.region_read(0, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x1720_00a1);
    client.region_read(0, 0xa00, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x172a_1000);
    client
        .region_write(0, 0x1700, &0x1234u32.to_le_bytes())
        .unwrap();
    client.region_read(0, 0x1700, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x1234);
    let irq = client.get_irq_info(0).unwrap();
    assert_eq!(irq.count, 1);
    client.reset().unwrap();
    client.shutdown().unwrap();
    drop(client);
    let (code, report) = srv.wait();
    assert_eq!(code, 0);
    assert_eq!(report["chip"], "ga102");
    assert_eq!(report["counters"]["bar0_reads"]["4"], 3);
    assert_eq!(report["counters"]["bar0_writes"]["total"], 1);
    assert_eq!(report["counters"]["window_moves"], 1);
    assert_eq!(report["counters"]["resets"], 1);
    assert_eq!(report["unexpected_violations"], 0);
    assert!(!srv.sock.exists(), "socket removed at exit");
}

#[test]
fn device_reset_advances_the_hostile_epoch() {
    let chip = Chip::by_name("ga102").unwrap();
    let mut cfg = Config::new(chip);
    cfg.vram_bytes = 1 << 30;
    cfg.hostile = Some(99);
    let mut srv = Server::start_with("hostile", cfg);
    let mut client = vfio_user::Client::new(&srv.sock).unwrap();
    let mut b = [0u8; 4];
    for epoch in 0..4 {
        let want = gpu_model::hostile::draw(99, epoch, chip, 1 << 30, false);
        // NV_USABLE_FB_SIZE_IN_MB.
        client.region_read(0, 0x1183a4, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), want.regs.fb_size, "epoch {epoch}");
        client.reset().unwrap();
    }
    client.shutdown().unwrap();
    drop(client);
    let (code, report) = srv.wait();
    assert_eq!(code, 0);
    assert_eq!(report["counters"]["resets"], 4);
    let epochs = report["hostile"]["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 5);
    assert_eq!(report["hostile"]["seed"], 99);
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i);
        let want = gpu_model::hostile::draw(99, i as u64, chip, 1 << 30, false);
        assert_eq!(e["scenario"], want.scenario.name());
    }
}

#[test]
fn client_reads_hopper_identity() {
    let mut srv = Server::start("hopper", "gh100", Faults::default());
    let mut client = vfio_user::Client::new(&srv.sock).unwrap();
    let mut b = [0u8; 4];
    client.region_read(7, 0, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x2330_10de);
    client.region_read(7, 8, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x0302_00a1);
    client.region_read(0, 0xa00, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x180a_1000);
    drop(client);
    assert_eq!(srv.wait().0, 0);
}

#[test]
fn unknown_command_and_bool_irqs_keep_the_stream_in_sync() {
    let mut srv = Server::start("sync", "tu102", Faults::default());
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    // Unknown command with a body: error reply (ENOSYS), body drained.
    s.write_all(&message(1, 99, &[0xaa; 24])).unwrap();
    let (h, _) = reply(&mut s);
    assert_eq!(h.id, 1);
    assert_eq!(h.flags, 1 | (1 << 5));
    assert_eq!(h.error, libc::ENOSYS as u32);
    assert_eq!(read_u32_raw(&mut s, 2, 0, 0), 0x1620_00a1);
    // SET_IRQS with boolean data (VFIO_IRQ_SET_DATA_BOOL | ACTION_UNMASK).
    let mut b = Vec::new();
    for v in [20u32 + 1, (1 << 1) | (1 << 4), 0, 0, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(1);
    s.write_all(&message(3, cmd::DEVICE_SET_IRQS, &b)).unwrap();
    let (h, _) = reply(&mut s);
    assert_eq!((h.id, h.flags), (3, 1));
    assert_eq!(read_u32_raw(&mut s, 4, 0, 0xa00), 0x162a_1000);
    // Access outside a region: EINVAL, recorded as a protocol violation.
    s.write_all(&region_read_msg(5, 0, 16 << 20, 4)).unwrap();
    let (h, _) = reply(&mut s);
    assert_eq!(h.error, libc::EINVAL as u32);
    // A too-short VERSION.
    s.write_all(&message(6, cmd::VERSION, &[0])).unwrap();
    let (h, _) = reply(&mut s);
    assert_eq!(h.error, libc::EINVAL as u32);
    assert_eq!(read_u32_raw(&mut s, 7, 0, 0), 0x1620_00a1);
    drop(s);
    let (code, report) = srv.wait();
    assert_eq!(code, 0);
    assert_eq!(report["violation_counts"]["protocol"], 2);
    assert_eq!(report["counters"]["messages"], 7);
}

#[test]
fn malformed_header_ends_the_connection() {
    let mut srv = Server::start("malformed", "ad102", Faults::default());
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    let mut h = Header {
        id: 1,
        command: cmd::REGION_READ,
        size: 8,
        flags: 0,
        error: 0,
    }
    .to_bytes()
    .to_vec();
    h.extend_from_slice(&[0; 8]);
    s.write_all(&h).unwrap();
    let (code, report) = srv.wait();
    assert_eq!(code, 1);
    assert!(report["violation_counts"]["protocol"].as_u64().unwrap() >= 1);
    assert!(report["unexpected_violations"].as_u64().unwrap() >= 1);
}

#[test]
fn truncated_message_ends_the_connection() {
    let mut srv = Server::start("truncated", "ga102", Faults::default());
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    let m = region_read_msg(1, 0, 0, 4);
    s.write_all(&m[..20]).unwrap();
    drop(s);
    let (code, report) = srv.wait();
    assert_eq!(code, 1);
    assert!(report["violation_counts"]["protocol"].as_u64().unwrap() >= 1);
}

#[test]
fn oversized_message_is_drained_and_refused() {
    let mut srv = Server::start("oversized", "ga102", Faults::default());
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    let body = vec![0u8; (1 << 20) + 8192];
    let m = message(1, cmd::REGION_WRITE, &body);
    let writer = {
        let mut s2 = s.try_clone().unwrap();
        std::thread::spawn(move || s2.write_all(&m).unwrap())
    };
    let (h, _) = reply(&mut s);
    writer.join().unwrap();
    assert_eq!(h.error, libc::E2BIG as u32);
    assert_eq!(read_u32_raw(&mut s, 2, 0, 0), 0x1720_00a1);
    drop(s);
    assert_eq!(srv.wait().0, 0);
}

#[test]
fn disconnect_after_n_accesses() {
    let faults = Faults {
        disconnect_after: Some(3),
        ..Faults::default()
    };
    let mut srv = Server::start("disconnect", "gb202", faults);
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    for i in 0..3 {
        read_u32_raw(&mut s, i, 0, 0);
    }
    // The server may already have closed: the write can fail with EPIPE.
    let _ = s.write_all(&region_read_msg(9, 0, 0, 4));
    let mut b = [0u8; 1];
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "server closed the connection"
    );
    let (code, report) = srv.wait();
    assert_eq!(code, 0);
    assert_eq!(report["counters"]["bar0_reads"]["total"], 3);
    assert_eq!(report["faults"][0], "disconnect-after=3");
}

#[test]
fn control_commands() {
    use gpu_model::control::{execute, After};
    let srv = Server::start("control", "ga102", Faults::default());
    let (r, a) = execute(&srv.shared, "expect bar1_fault");
    assert_eq!((r.as_str(), a), ("ok", After::Continue));
    assert!(execute(&srv.shared, "expect nonsense")
        .0
        .starts_with("error"));
    assert_eq!(execute(&srv.shared, "report").0, "ok");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&srv.report).unwrap()).unwrap();
    assert_eq!(report["expected_kinds"][0], "bar1_fault");
    let dump = srv.dir.join("vram.bin");
    assert_eq!(
        execute(&srv.shared, &format!("dump {}", dump.display())).0,
        "ok"
    );
    assert_eq!(&std::fs::read(&dump).unwrap()[..8], b"NVMMVRAM");
    assert!(execute(&srv.shared, "status")
        .0
        .starts_with("ok unexpected=0"));
    assert!(execute(&srv.shared, "frobnicate").0.starts_with("error"));
    assert_eq!(execute(&srv.shared, "quit").1, After::Quit);
    // Let the server thread finish.
    drop(UnixStream::connect(&srv.sock).unwrap());
}

#[test]
fn random_bytes_do_not_crash_the_server() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        let mut srv = Server::start(&format!("random{round}"), "ga102", Faults::default());
        let mut s = UnixStream::connect(&srv.sock).unwrap();
        let mut bytes = Vec::new();
        for i in 0..(64 + round * 37) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Plausible headers now and then, so bodies get parsed too.
            if i % 16 == 0 {
                let command = (seed >> 40) as u16 % 16;
                let size = 16 + (seed >> 20) as u32 % 48;
                bytes.extend_from_slice(
                    &Header {
                        id: i as u16,
                        command,
                        size,
                        flags: 0,
                        error: 0,
                    }
                    .to_bytes(),
                );
            } else {
                bytes.push((seed >> 33) as u8);
            }
        }
        let _ = s.write_all(&bytes);
        drop(s);
        let (code, _) = srv.wait();
        assert!(code == 0 || code == 1);
    }
}
