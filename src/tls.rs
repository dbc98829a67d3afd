//! TLS termination settings: TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, one
//! certificate chain and key from PEM. Built when a config compiles, so a certificate
//! rotation is a reload and a bad certificate is a rejected one.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Pair(String),
}

pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Key(format!("not a PEM private key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
