//! The floor server: the least a server can do between a commit and a loopback client's
//! socket, to measure what this machine allows (`--servers floor`).
//!
//! One thread busy-polls the ring with `try_read` (it never sleeps, so it burns a whole
//! core and sees a commit within a cache-line transfer), builds the same message as
//! transport-server (`0x01`, the 32-byte frame header, the payload) and writes it to
//! every client with one `writev` each, from that same thread: no futex, no timer, no
//! lock, no hand-off, no per-client check. What remains between the commit and the
//! client's receive time is the part no server design removes: the `writev` system
//! call, the loopback TCP path, and the wake-up of the client's sleeping thread. A
//! server that sleeps between frames (as transport-server does, to use a few % of a
//! core) can come close to this figure, never below it.
//!
//! Two variants do the same but wait for each frame as a server within a few % of a
//! core must, with a blocking `read_timeout`: `floor-sleep` (`WakePolicy::Sleep`: the
//! futex on a v1 ring, a 500 µs poll on a legacy one) and `floor-cadence` (the default
//! `WakePolicy::Cadence`). They are the floor for a server that does not spin: the
//! wake-up of a sleeping thread is in their figure and in no busy-polling server's.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmring_core::{FrameHeader, ReaderOptions, RingReader, StartPosition, WakePolicy};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// How long a write to one client may block before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the floor server on `ring`, accepting WebSocket clients on `listen`. Never
/// returns.
/// How the floor server waits for the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloorWait {
    /// Busy-polls `try_read`: a whole core.
    Spin,
    /// A blocking read with this wake policy.
    Block(WakePolicy),
}

pub(crate) fn floor_server(ring: &str, listen: &str, wait: FloorWait) -> ! {
    let listener = TcpListener::bind(listen).expect("floor server: bind");
    let clients: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let accepted = clients.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(stream) = upgrade(stream) {
                accepted.lock().unwrap().push(stream);
            }
        }
    });
    let options = ReaderOptions {
        start: StartPosition::Latest,
        verify_crc: false,
        resync_at_keyframe: false,
        wake: match wait {
            FloorWait::Block(policy) => policy,
            FloorWait::Spin => WakePolicy::default(),
        },
    };
    if let FloorWait::Block(_) = wait {
        // As transport-server's reader thread does: sleeps end when asked, not up to
        // 50 µs later.
        // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's
        // timer slack; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    }
    let mut reader = loop {
        match RingReader::open(ring, &options) {
            Ok(r) => break r,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    loop {
        let read = match wait {
            FloorWait::Spin => reader.try_read(),
            FloorWait::Block(_) => reader.read_timeout(Some(Duration::from_millis(100))),
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            _ => {
                std::hint::spin_loop();
                continue;
            }
        };
        let i = frame.info;
        let header = FrameHeader::new(i.frame_id, i.frame_seq, i.size as u32, i.flags, i.codec.0, i.crc32);
        let header = zerocopy::IntoBytes::as_bytes(&header);
        let ws = ws_binary_header(1 + header.len() + frame.payload.len());
        let parts = [
            IoSlice::new(&ws),
            IoSlice::new(&[0x01]),
            IoSlice::new(header),
            IoSlice::new(frame.payload),
        ];
        clients.lock().unwrap().retain_mut(|c| write_all(c, &parts));
    }
}

/// Reads the client's upgrade request and answers 101; `None` if it is not one.
fn upgrade(mut stream: TcpStream) -> Option<TcpStream> {
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(WRITE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).ok()?;
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 || request.len() > 8192 {
            return None;
        }
        request.push(byte[0]);
    }
    let request = String::from_utf8_lossy(&request);
    let key = request.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(answer.as_bytes()).ok()?;
    Some(stream)
}

/// The header of an unmasked, final binary WebSocket frame of `len` payload bytes.
fn ws_binary_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x82];
    match len {
        0..=125 => h.push(len as u8),
        126..=0xffff => {
            h.push(126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h
}

/// Writes all of `parts` (one `writev` when the socket takes it all); false if the
/// client is gone or stuck.
fn write_all(stream: &mut TcpStream, parts: &[IoSlice<'_>]) -> bool {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        // Skip what is written: rebuild the slices from `done` on.
        let mut skip = done;
        let rest: Vec<IoSlice<'_>> = parts
            .iter()
            .filter_map(|p| {
                if skip >= p.len() {
                    skip -= p.len();
                    None
                } else {
                    let s = IoSlice::new(&p[skip..]);
                    skip = 0;
                    Some(s)
                }
            })
            .collect();
        match stream.write_vectored(&rest) {
            Ok(0) | Err(_) => return false,
            Ok(n) => done += n,
        }
    }
    true
}
