//! A TCP link between one client and the API server that a test can cut, as a network
//! partition does: once cut, no byte crosses in either direction and new connections are
//! accepted but go nowhere, so requests hang instead of failing fast (the harder case for
//! a client). Healing it lets the held bytes through, as TCP retransmission would after a
//! short partition.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

pub struct Link {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Link {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("the link's address");
        let cut = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let (c, done) = (cut.clone(), closed.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (c, done) = (c.clone(), done.clone());
                    thread::spawn(move || pump(from, to, &c, &done));
                }
            }
        });
        Link {
            address,
            cut,
            closed,
        }
    }

    /// `https://127.0.0.1:PORT` of the link (the API server's certificate names 127.0.0.1).
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `closed`.
        let _ = TcpStream::connect(self.address);
    }
}

/// Copies `from` to `to` while the link is up; while it is cut, reads nothing, so the
/// sender's bytes wait in the socket buffers.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, closed: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = [0u8; 16 * 1024];
    while !closed.load(Ordering::SeqCst) {
        if cut.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
