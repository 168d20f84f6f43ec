//! The protocol part of the configuration: `--proxy-protocol`, the TLS
//! files (`--certfile`, `--keyfile`, `--ca-certs`), `--no-http2` and the
//! `--h2-*` settings, checked for consistency. Reading the certificate
//! files is `front::tls`'s job (at start-up and on HUP); speaking the
//! protocols is `front::conn`'s and its neighbours'.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// hyper's defaults for a server's flow-control windows.
const DEFAULT_WINDOW: u32 = 1024 * 1024;
/// The largest window HTTP/2 allows (RFC 9113, 6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// The PEM files of `--certfile`, `--keyfile` and `--ca-certs`, absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, server certificate first.
    pub certfile: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: PathBuf,
    /// CA certificates client certificates must chain to; `None`: clients
    /// are not asked for a certificate.
    pub ca_certs: Option<PathBuf>,
}

/// How HTTP/2 connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Offer `h2` in ALPN and accept cleartext HTTP/2 with prior knowledge.
    pub enabled: bool,
    /// Streams (requests) a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one stream before the front acknowledges.
    pub initial_stream_window: u32,
    /// Bytes a client may send on the whole connection before the front
    /// acknowledges.
    pub initial_connection_window: u32,
    /// Largest frame payload the front accepts.
    pub max_frame_size: u32,
}

impl Default for Http2Settings {
    fn default() -> Http2Settings {
        Http2Settings {
            enabled: true,
            max_concurrent_streams: 100,
            initial_stream_window: DEFAULT_WINDOW,
            initial_connection_window: DEFAULT_WINDOW,
            max_frame_size: 16_384,
        }
    }
}

/// What the protocol flags ask for.
pub(super) struct Protocols {
    pub proxy_protocol: bool,
    pub tls: Option<TlsFiles>,
    pub http2: Http2Settings,
}

/// The protocol flags, flattened into tandem's command line.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Protocols: PROXY, TLS and HTTP/2")]
pub(super) struct ProtocolArgs {
    /// Every connection starts with a PROXY protocol header (v1 or v2, as
    /// HAProxy and cloud TCP load balancers send): its source address
    /// becomes the client's. A connection without a valid one is closed.
    #[arg(long)]
    proxy_protocol: bool,

    /// Serve TLS (https) on every listener with this PEM certificate chain
    /// (server certificate first). Needs --keyfile. HUP reads it again.
    #[arg(long, value_name = "FILE", requires = "keyfile")]
    certfile: Option<PathBuf>,

    /// The PEM private key of --certfile. HUP reads it again.
    #[arg(long, value_name = "FILE", requires = "certfile")]
    keyfile: Option<PathBuf>,

    /// Require every TLS client to present a certificate issued by one of
    /// the CAs in this PEM file; others fail the handshake.
    #[arg(long, value_name = "FILE", requires = "certfile")]
    ca_certs: Option<PathBuf>,

    /// Serve HTTP/1.1 only: don't offer h2 in TLS (ALPN) and don't accept
    /// cleartext HTTP/2 (h2c with prior knowledge).
    #[arg(long)]
    no_http2: bool,

    /// HTTP/2: requests a client may have in flight at once on one connection.
    #[arg(long, value_name = "INT", default_value_t = Http2Settings::default().max_concurrent_streams)]
    h2_max_concurrent_streams: u32,

    /// HTTP/2: bytes of request body a client may send on one stream before
    /// tandem acknowledges them (flow-control window).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_WINDOW)]
    h2_stream_window: u32,

    /// HTTP/2: bytes of request bodies a client may send on one connection,
    /// all streams together, before tandem acknowledges them.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_WINDOW)]
    h2_connection_window: u32,

    /// HTTP/2: largest frame payload tandem accepts, from 16384 to 16777215.
    #[arg(long, value_name = "BYTES", default_value_t = Http2Settings::default().max_frame_size)]
    h2_max_frame_size: u32,
}

impl ProtocolArgs {
    /// Validates the flags; relative paths are taken relative to `base`.
    pub(super) fn into_config(self, base: &Path) -> Result<Protocols, ConfigError> {
        let tls = match (self.certfile, self.keyfile) {
            (Some(certfile), Some(keyfile)) => Some(TlsFiles {
                certfile: base.join(certfile),
                keyfile: base.join(keyfile),
                ca_certs: self.ca_certs.map(|p| base.join(p)),
            }),
            // clap's `requires` refuses one without the other.
            _ => None,
        };
        let h2 = Http2Settings {
            enabled: !self.no_http2,
            max_concurrent_streams: self.h2_max_concurrent_streams,
            initial_stream_window: self.h2_stream_window,
            initial_connection_window: self.h2_connection_window,
            max_frame_size: self.h2_max_frame_size,
        };
        let range = |flag: &str, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError(format!("--{flag} {value}: must be from {min} to {max}")))
            }
        };
        range("h2-max-concurrent-streams", h2.max_concurrent_streams, 1, 100_000)?;
        range("h2-stream-window", h2.initial_stream_window, 65_535, MAX_WINDOW)?;
        range("h2-connection-window", h2.initial_connection_window, 65_535, MAX_WINDOW)?;
        range("h2-max-frame-size", h2.max_frame_size, 16_384, 16_777_215)?;
        Ok(Protocols { proxy_protocol: self.proxy_protocol, tls, http2: h2 })
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_for_test as parse;
    use super::*;

    #[test]
    fn tls_files_are_resolved_and_paired() {
        let c = parse(&["--certfile", "/c.pem", "--keyfile", "/k.pem", "x"]).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!((tls.certfile, tls.keyfile, tls.ca_certs), ("/c.pem".into(), "/k.pem".into(), None));
        let c = parse(&["--certfile", "c.pem", "--keyfile", "k.pem", "--ca-certs", "ca.pem", "x"]).unwrap();
        assert!(c.tls.unwrap().ca_certs.unwrap().is_absolute());
        assert!(parse(&["x"]).unwrap().tls.is_none());
        for alone in [&["--certfile", "c.pem", "x"][..], &["--keyfile", "k.pem", "x"], &["--ca-certs", "ca.pem", "x"]] {
            let msg = parse(alone).unwrap_err().to_string();
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn http2_settings_have_defaults_and_bounds() {
        let h2 = parse(&["x"]).unwrap().http2;
        assert_eq!(h2, Http2Settings::default());
        let h2 = parse(&["--no-http2", "--h2-max-concurrent-streams", "7", "x"]).unwrap().http2;
        assert!(!h2.enabled);
        assert_eq!(h2.max_concurrent_streams, 7);
        assert!(!parse(&["x"]).unwrap().proxy_protocol);
        assert!(parse(&["--proxy-protocol", "x"]).unwrap().proxy_protocol);
        for bad in [
            &["--h2-max-concurrent-streams", "0", "x"][..],
            &["--h2-stream-window", "100", "x"],
            &["--h2-connection-window", "4294967295", "x"],
            &["--h2-max-frame-size", "1000", "x"],
        ] {
            let msg = parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad[0]), "{msg}");
        }
    }
}
