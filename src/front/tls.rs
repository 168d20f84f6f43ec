//! TLS on client connections: the rustls server configuration (TLS 1.2 and
//! 1.3 on the *ring* provider, ALPN `h2` and `http/1.1`, optional client
//! certificates), the handshake, and the certificate that `HUP` replaces.
//!
//! The certificate lives in [`CertStore`], which rustls asks for it on
//! every handshake, so a reload changes what new connections get while
//! open connections keep the session they have. A reload that can't read
//! the new files logs why and keeps the old certificate. What is spoken
//! over the encrypted stream is `conn`'s business; the files' names come
//! from `config`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{Http2Settings, TlsFiles};

/// ALPN names, in the server's order of preference.
const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

/// Why a certificate, key or CA file can't be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {}: {why}", .path.display())]
    Certificate { path: PathBuf, why: String },
    #[error("cannot read private key {}: {why}", .path.display())]
    Key { path: PathBuf, why: String },
    #[error("cannot read CA certificates {}: {why}", .path.display())]
    CaCerts { path: PathBuf, why: String },
    #[error("cannot set up TLS: {0}")]
    Setup(#[from] rustls::Error),
}

/// What a finished handshake tells the connection.
pub struct Negotiated {
    /// The client asked for HTTP/2 with ALPN.
    pub h2: bool,
}

/// The TLS side of every listener: the acceptor and the reloadable
/// certificate it serves.
pub struct Tls {
    acceptor: TlsAcceptor,
    store: Arc<CertStore>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
}

impl Tls {
    /// Reads the files and builds the server configuration. Errors name the
    /// file at fault.
    pub fn load(files: &TlsFiles, http2: &Http2Settings) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_certified_key(files, &provider)?;
        let store = Arc::new(CertStore(RwLock::new(Arc::new(key))));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &files.ca_certs {
            Some(path) => {
                let roots = load_roots(path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::CaCerts { path: path.clone(), why: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = if http2.enabled { vec![H2.to_vec(), HTTP11.to_vec()] } else { vec![HTTP11.to_vec()] };
        config.ignore_client_order = true;
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), store, files: files.clone(), provider })
    }

    /// Reads the certificate and key files again; new connections get the
    /// new certificate. On failure the old one stays and the error is
    /// logged. `why` says what asked (HUP, the control socket…).
    pub fn reload(&self, why: &str) {
        match load_certified_key(&self.files, &self.provider) {
            Ok(key) => {
                self.store.replace(key);
                tracing::info!("{why}: reloaded TLS certificate {}", self.files.certfile.display());
            }
            Err(e) => tracing::error!("{why}: {e}; keeping the current certificate"),
        }
    }

    /// The TLS handshake (the caller bounds its time).
    pub async fn accept<S>(&self, socket: S) -> std::io::Result<(TlsStream<S>, Negotiated)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.acceptor.accept(socket).await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        Ok((stream, Negotiated { h2 }))
    }
}

/// The certificate every handshake gets; replaced whole on reload.
#[derive(Debug)]
struct CertStore(RwLock<Arc<CertifiedKey>>);

impl CertStore {
    fn replace(&self, key: CertifiedKey) {
        let mut current = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Arc::clone(&current))
    }
}

fn load_certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |why: String| TlsError::Certificate { path: files.certfile.clone(), why };
    let key_error = |why: String| TlsError::Key { path: files.keyfile.clone(), why };
    let certs = read_certs(&files.certfile).map_err(cert_error)?;
    let key = read_key(&files.keyfile).map_err(key_error)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            key_error(format!("it does not match the certificate in {}", files.certfile.display()))
        }
        other => key_error(other.to_string()),
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_reader_iter(BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate (BEGIN CERTIFICATE) in it".into());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    PrivateKeyDer::from_pem_reader(BufReader::new(file)).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key (BEGIN ... PRIVATE KEY) in it".into(),
        other => pem_error(&other),
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let error = |why: String| TlsError::CaCerts { path: path.to_path_buf(), why };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path).map_err(error)? {
        roots.add(cert).map_err(|e| error(e.to_string()))?;
    }
    Ok(roots)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { certfile: dir.join("cert.pem"), keyfile: dir.join("key.pem"), ca_certs: None }
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tls::load(&files(dir.path()), &Http2Settings::default()).err().unwrap().to_string();
        assert!(err.starts_with("cannot read certificate "), "{err}");
        assert!(err.contains("cert.pem"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn files_without_pem_say_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "hello\n").unwrap();
        let err = Tls::load(&files(dir.path()), &Http2Settings::default()).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
