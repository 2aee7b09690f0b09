//! TLS setup: certificate fingerprint pinning and the reqwest client's trust choice.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::{Fingerprint, TlsMode};
use crate::error::Error;

/// Accepts exactly the end-entity certificate whose SHA-256 matches the pinned fingerprint.
///
/// Host name, validity period and issuer are deliberately not checked (self-signed Proxmox
/// certificates, the way `pvesh`/`proxmoxer` pin them); the handshake signature is verified
/// with the certificate's key, so a peer must hold the pinned certificate's private key.
#[derive(Debug)]
pub struct FingerprintVerifier {
    pinned: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl FingerprintVerifier {
    /// A verifier pinning `pinned`, using `provider` for signature checks.
    pub fn new(pinned: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        FingerprintVerifier { pinned, provider }
    }

    /// The pure decision: does this DER certificate have the pinned fingerprint?
    pub fn matches(&self, end_entity_der: &[u8]) -> bool {
        Fingerprint::of_der(end_entity_der) == self.pinned
    }
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.matches(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(
                expected = %self.pinned,
                got = %Fingerprint::of_der(end_entity.as_ref()),
                "server certificate does not match the pinned fingerprint"
            );
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A rustls client config that pins `fp`.
pub fn pinned_client_config(fp: Fingerprint) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidConfig {
            field: "tls".into(),
            value: "fingerprint".into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FingerprintVerifier::new(fp, provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Applies the TLS choice to a reqwest builder.
pub(crate) fn configure(
    builder: reqwest::ClientBuilder,
    mode: &TlsMode,
) -> Result<reqwest::ClientBuilder, Error> {
    Ok(match mode {
        TlsMode::SystemRoots => builder,
        TlsMode::CaFile(path) => {
            let bad = |reason: String| Error::InvalidConfig {
                field: "PROXMOX_CA_CERT".into(),
                value: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(bad("contains no certificate".into()));
            }
            builder.tls_certs_only(certs)
        }
        TlsMode::Fingerprint(fp) => builder.tls_backend_preconfigured(pinned_client_config(*fp)?),
        TlsMode::Insecure => {
            tracing::warn!(
                "TLS certificate verification is DISABLED for the Proxmox API (PROXMOX_VERIFY_SSL=false); \
                 prefer PROXMOX_TLS_FINGERPRINT or PROXMOX_CA_CERT"
            );
            builder.tls_danger_accept_invalid_certs(true)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_accepts_only_pinned_certificate() {
        let cert_a = b"certificate A (DER bytes)".to_vec();
        let cert_b = b"certificate B (DER bytes)".to_vec();
        let v = FingerprintVerifier::new(Fingerprint::of_der(&cert_a), provider());
        assert!(v.matches(&cert_a));
        assert!(!v.matches(&cert_b));
        let name = ServerName::try_from("pve.example").unwrap();
        let now = UnixTime::now();
        assert!(
            v.verify_server_cert(&CertificateDer::from(cert_a), &[], &name, &[], now)
                .is_ok()
        );
        let err = v
            .verify_server_cert(&CertificateDer::from(cert_b), &[], &name, &[], now)
            .unwrap_err();
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)));
        assert!(!v.supported_verify_schemes().is_empty());
    }

    #[test]
    fn pinned_config_builds() {
        let cfg = pinned_client_config(Fingerprint([7; 32])).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
