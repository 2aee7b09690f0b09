//! TLS modes against a real rustls HTTPS server on 127.0.0.1 (test CA + leaf in fixtures/tls).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use proxmox_api::{Error, Fingerprint, ProxmoxApi, ProxmoxClient, TlsMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::config_for;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn server_cert_der() -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture("server.pem")).unwrap()
}

/// Serves `GET /api2/json/version` over TLS on a random port, forever (thread per connection).
fn https_server() -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert_der()], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return, // handshake refused by the client, or closed
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = r#"{"data":{"version":"9.1.1","release":"9.1","repoid":"42d3b7d8"}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

fn client(port: u16, host: &str, tls: TlsMode) -> Result<ProxmoxClient, Error> {
    let mut cfg = config_for(&format!("https://{host}:{port}/api2/json"));
    cfg.tls = tls;
    ProxmoxClient::new(cfg)
}

#[tokio::test]
async fn fingerprint_pinning_accepts_exact_cert_only() {
    let port = https_server();
    let fp = Fingerprint::of_der(server_cert_der().as_ref());
    // The colon form Proxmox shows parses to the same pin.
    assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
    let ok = client(port, "127.0.0.1", TlsMode::Fingerprint(fp)).unwrap();
    assert_eq!(ok.version().await.unwrap().version, "9.1.1");
    // Host name is not part of a pin (like PVE's own tools): `localhost` works too.
    let ok = client(port, "localhost", TlsMode::Fingerprint(fp)).unwrap();
    assert_eq!(ok.version().await.unwrap().version, "9.1.1");

    let mut wrong = *fp.as_bytes();
    wrong[0] ^= 0xff;
    let bad = client(port, "127.0.0.1", TlsMode::Fingerprint(Fingerprint(wrong))).unwrap();
    let e = bad.version().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
}

#[tokio::test]
async fn ca_file_system_roots_and_insecure() {
    let port = https_server();
    let ca = client(port, "127.0.0.1", TlsMode::CaFile(fixture("ca.pem"))).unwrap();
    assert_eq!(ca.version().await.unwrap().version, "9.1.1");

    let system = client(port, "127.0.0.1", TlsMode::SystemRoots).unwrap();
    assert!(matches!(
        system.version().await.unwrap_err(),
        Error::Transport { .. }
    ));

    // The leaf is not a CA: trusting it as a root must not make it valid.
    let leaf_as_ca = client(port, "127.0.0.1", TlsMode::CaFile(fixture("server.pem"))).unwrap();
    assert!(leaf_as_ca.version().await.is_err());

    let insecure = client(port, "127.0.0.1", TlsMode::Insecure).unwrap();
    assert_eq!(insecure.version().await.unwrap().version, "9.1.1");
}

#[tokio::test]
async fn unreadable_ca_file_names_the_path() {
    let e = client(
        1,
        "127.0.0.1",
        TlsMode::CaFile("/nonexistent/pve-root-ca.pem".into()),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("PROXMOX_CA_CERT") && text.contains("/nonexistent/pve-root-ca.pem"),
        "{text}"
    );
    let e = client(1, "127.0.0.1", TlsMode::CaFile(fixture("README.md"))).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
}
