//! HTTPS/WSS without a proxy (rustls): WebCodecs, and so the viewer page, works only
//! in a secure context, which a page opened as `http://robot:8080/` from another
//! machine is not.
//!
//! The TLS listener terminates TLS and hands the plaintext to the server's own HTTP
//! and WebSocket code over a loopback connection to its internal plain listener. The
//! plain path (the zero-copy `writev` fan-out, the HTTP parser, every check) stays the
//! one path; a TLS client costs one more copy through loopback, which encryption
//! costs anyway.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::limits::{PendingConnections, PendingTicket};

/// The certificate chain and private key, as PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain (server certificate first), PEM.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
}

/// Why TLS could not be set up; each says which file and what to do.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// A file holds no usable PEM section of the kind wanted.
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        wanted: &'static str,
    },
    /// rustls refused the certificate and key (they do not match, an unsupported key).
    Config(rustls::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::Pem { path, wanted } => write!(
                f,
                "{} holds no {wanted} in PEM form (-----BEGIN ...-----); give --tls-cert the certificate chain and --tls-key its private key",
                path.display()
            ),
            TlsError::Config(e) => write!(f, "the TLS certificate and key cannot be used together: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Loads the certificate chain and key into a TLS acceptor (TLS 1.2 and 1.3, ring).
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = read(&files.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert.clone(),
            wanted: "certificate",
        });
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: files.key.clone(),
        wanted: "private key",
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves one TLS connection: the handshake (within `handshake_timeout`), then the
/// plaintext both ways between the client and the plain listener at `backend`, until
/// either side closes. `pending` (a place among the connections not yet past their
/// handshake) is released once the handshake is done; an eviction before that ends
/// the connection.
pub(crate) async fn terminate(
    client: TcpStream,
    acceptor: TlsAcceptor,
    backend: SocketAddr,
    handshake_timeout: Duration,
    pending: PendingTicket,
) {
    let peer = client.peer_addr().ok();
    let _ = client.set_nodelay(true);
    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(client));
    let handshake = tokio::select! {
        () = pending.evicted() => return,
        result = handshake => result,
    };
    let mut tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!("{peer:?}: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("{peer:?}: no TLS handshake within {handshake_timeout:?}");
            return;
        }
    };
    drop(pending);
    let mut plain = match TcpStream::connect(backend).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("TLS: cannot reach the internal listener {backend}: {e}");
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}

/// Accepts TLS connections on `listener` until `shutdown` completes, each terminated
/// by [`terminate`] towards the plain listener at `backend`. Sockets still in their
/// TLS handshake count against `pending` like sockets in their HTTP phase; `evicted`
/// is called for each one evicted to make room.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    backend: SocketAddr,
    pending: Arc<PendingConnections>,
    evicted: impl Fn() + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (ticket, evicted_one) = pending.admit(std::time::Instant::now());
                    if evicted_one {
                        evicted();
                    }
                    tokio::spawn(terminate(stream, acceptor.clone(), backend, HANDSHAKE_TIMEOUT, ticket));
                }
                Err(e) => {
                    // Out of file descriptors: free the oldest idle socket's.
                    if pending.evict_oldest() {
                        evicted();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        tracing::warn!("TLS accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
        }
    }
}

/// Time a client has to complete its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_wrong_files_say_which_and_what_to_do() {
        let dir = std::env::temp_dir().join(format!("shmring-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, b"hello").unwrap();
        let files = TlsFiles {
            cert: dir.join("absent.pem"),
            key: not_pem.clone(),
        };
        let e = acceptor(&files).err().expect("refused").to_string();
        assert!(e.contains("absent.pem") && e.contains("cannot read"), "{e}");
        let files = TlsFiles {
            cert: not_pem.clone(),
            key: not_pem.clone(),
        };
        let e = acceptor(&files).err().expect("refused").to_string();
        assert!(e.contains("no certificate") && e.contains("--tls-cert"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
