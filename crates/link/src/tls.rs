//! Mutual TLS for links (rustls, TLS 1.2/1.3, ring provider).
//!
//! Every DC holds a certificate signed by the cluster CA and valid for the DNS
//! name `<dc>.<cluster>.dcsync` ([`identity_name`]). The dialing agent checks
//! that the listener's certificate chains to the CA and is valid for the
//! name of the DC it dialed; the listener requires a client certificate
//! chaining to the same CA and, once the peer says who it is in `Hello`,
//! checks the certificate is valid for that DC's name. A peer that presents
//! another DC's certificate, a certificate from another CA or none at all is
//! refused, with the reason logged.
//!
//! [`generate`] writes a CA and per-DC certificates (`dcsync certs`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// TLS set-up errors; all name the file or the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// What the file should hold ("CA certificate", "certificate", "private key").
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Reason.
        reason: String,
    },
    /// rustls refused the configuration (key does not match certificate...).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// The DNS name a DC's certificate must be valid for.
pub fn identity_name(dc: &str, cluster: &str) -> String {
    format!("{dc}.{cluster}.dcsync")
}

/// A stream a link runs on: plain TCP or TLS over TCP.
pub trait LinkIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkIo for T {}

/// Boxed link stream.
pub type LinkStream = Box<dyn LinkIo>;

/// Loaded TLS material of one agent.
#[derive(Clone)]
pub struct LinkTls {
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
    cluster: String,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

impl LinkTls {
    /// Loads the CA, this DC's certificate chain and key.
    ///
    /// Errors: [`TlsError::File`] naming an unreadable or empty file,
    /// [`TlsError::Config`] if the key does not match the certificate.
    pub fn load(cluster: &str, ca: &Path, cert: &Path, key: &Path) -> Result<LinkTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in read_certs("CA certificate", ca)? {
            roots.add(c).map_err(|e| TlsError::File {
                what: "CA certificate",
                path: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = read_certs("certificate", cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
            what: "private key",
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
        Ok(LinkTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            cluster: cluster.to_string(),
        })
    }

    /// Client side: TLS handshake with the agent of `peer`, verifying its
    /// certificate is valid for `<peer>.<cluster>.dcsync`.
    pub async fn connect(
        &self,
        peer: &str,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<LinkStream> {
        let name = ServerName::try_from(identity_name(peer, &self.cluster))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Box::new(self.connector.connect(name, tcp).await?))
    }

    /// Server side: TLS handshake requiring a client certificate from the
    /// cluster CA. Returns the stream and the client's end-entity certificate.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<(LinkStream, Option<CertificateDer<'static>>)> {
        let s = self.acceptor.accept(tcp).await?;
        let cert = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        Ok((Box::new(s), cert))
    }

    /// Whether `cert` (already verified against the CA) belongs to DC `dc`.
    pub fn cert_is_for(&self, cert: &CertificateDer<'_>, dc: &str) -> bool {
        let Ok(name) = ServerName::try_from(identity_name(dc, &self.cluster)) else {
            return false;
        };
        match webpki::EndEntityCert::try_from(cert) {
            Ok(ee) => ee.verify_is_valid_for_subject_name(&name).is_ok(),
            Err(_) => false,
        }
    }
}

/// Files written by [`generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    /// CA certificate path.
    pub ca_cert: PathBuf,
    /// Whether an existing CA was reused.
    pub reused_ca: bool,
    /// Per DC: (id, certificate path, key path).
    pub dcs: Vec<(String, PathBuf, PathBuf)>,
}

/// Writes `ca.crt`/`ca.key` (reused if present) and `<dc>.crt`/`<dc>.key`
/// for every DC into `out`. Certificates are valid for
/// `<dc>.<cluster>.dcsync`, 10 years; keys are ECDSA P-256, files mode 0600.
pub fn generate(cluster: &str, dcs: &[String], out: &Path) -> Result<Generated, TlsError> {
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let io = |path: &Path, e: std::io::Error| TlsError::File {
        what: "output",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let ca_cert_path = out.join("ca.crt");
    let ca_key_path = out.join("ca.key");
    let (issuer, reused_ca) = if ca_cert_path.exists() && ca_key_path.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| io(&ca_key_path, e))?;
        let cert_pem = std::fs::read_to_string(&ca_cert_path).map_err(|e| io(&ca_cert_path, e))?;
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(gen)?;
        (
            rcgen::Issuer::from_ca_cert_pem(&cert_pem, key).map_err(gen)?,
            true,
        )
    } else {
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("dcsync cluster {cluster} CA"),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key).map_err(gen)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert_path, cert.pem()).map_err(|e| io(&ca_cert_path, e))?;
        (rcgen::Issuer::new(params, key), false)
    };
    let mut out_dcs = Vec::new();
    for dc in dcs {
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params =
            rcgen::CertificateParams::new(vec![identity_name(dc, cluster)]).map_err(gen)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, dc.clone());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.signed_by(&key, &issuer).map_err(gen)?;
        let cp = out.join(format!("{dc}.crt"));
        let kp = out.join(format!("{dc}.key"));
        std::fs::write(&cp, cert.pem()).map_err(|e| io(&cp, e))?;
        write_private(&kp, &key.serialize_pem())?;
        out_dcs.push((dc.clone(), cp, kp));
    }
    Ok(Generated {
        ca_cert: ca_cert_path,
        reused_ca,
        dcs: out_dcs,
    })
}

fn write_private(path: &Path, pem: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |e: std::io::Error| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
