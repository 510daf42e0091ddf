//! The operator's side of cluster TLS: the cluster's certificate authority
//! (`nexus cluster ca`), node certificates (`nexus cluster cert`) and
//! revocation (`nexus cluster revoke`). The CA's key stays in the
//! operator's CA directory; a node's TLS directory gets the CA certificate,
//! the revocation list, and its own certificate and key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nexus_kernel::ReplicaId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

use super::{node_name, CertInfo, Result, TlsError, ANY_NODE, CA_CERT, CA_KEY, CRL};
use super::{NODE_CERT, NODE_KEY};

fn rcgen_error(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Invalid(format!("{what}: {e}"))
}

fn days(n: u32) -> time::Duration {
    time::Duration::days(i64::from(n))
}

/// A random positive serial number of 16 bytes.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero byte: DER keeps it as given
    SerialNumber::from_slice(&bytes)
}

/// Writes `contents` to a new file `path` (mode `mode`); refuses to
/// overwrite unless `replace`.
fn write(path: &Path, contents: &str, mode: u32, replace: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path).map_err(TlsError::io(path))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(TlsError::io(path))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(TlsError::io(path))
}

/// What `revoke` and `issue_node` tell the operator to do next.
pub struct Issued {
    pub info: CertInfo,
    pub files: Vec<PathBuf>,
}

/// The cluster CA in `dir`.
pub struct Authority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// Creates a CA in `dir` (made if missing), valid for `valid_days`,
    /// with an empty revocation list. Refuses a directory that already
    /// holds a CA.
    pub fn create(dir: &Path, valid_days: u32) -> Result<Authority> {
        std::fs::create_dir_all(dir).map_err(TlsError::io(dir))?;
        let key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Nexus cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + days(valid_days);
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key).map_err(rcgen_error("CA"))?;
        // The key first, created exclusively: an existing CA is never replaced.
        write(&dir.join(CA_KEY), &key.serialize_pem(), 0o600, false)?;
        write(&dir.join(CA_CERT), &cert.pem(), 0o644, true)?;
        let ca = Authority {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
        };
        ca.write_crl(Vec::new())?;
        Ok(ca)
    }

    pub fn open(dir: &Path) -> Result<Authority> {
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?)
            .map_err(rcgen_error(&dir.join(CA_KEY).display().to_string()))?;
        let cert = read(&dir.join(CA_CERT))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)
            .map_err(rcgen_error(&dir.join(CA_CERT).display().to_string()))?;
        Ok(Authority {
            dir: dir.to_owned(),
            issuer,
        })
    }

    /// Issues node `id`'s certificate, valid for `valid_days`, also valid
    /// for the names and addresses in `hosts`, into the node's TLS
    /// directory `out` (with the CA certificate and revocation list).
    /// Replaces a certificate already there: that is how one rotates.
    pub fn issue_node(
        &self,
        id: ReplicaId,
        hosts: &[String],
        valid_days: u32,
        out: &Path,
    ) -> Result<Issued> {
        if id == 0 {
            return Err(TlsError::Invalid("node ids start at 1".into()));
        }
        let mut names = vec![node_name(id), ANY_NODE.to_owned()];
        for h in hosts {
            if super::node_of_name(h).is_some() || h == ANY_NODE {
                return Err(TlsError::Invalid(format!(
                    "{h}: names of this form are given by --node alone"
                )));
            }
            names.push(h.clone());
        }
        let mut params = CertificateParams::new(names).map_err(rcgen_error("--host"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("nexus node {id}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + days(valid_days);
        params.serial_number = Some(serial());
        let key = KeyPair::generate().map_err(rcgen_error("node key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("node certificate"))?;
        std::fs::create_dir_all(out).map_err(TlsError::io(out))?;
        let files = [NODE_KEY, NODE_CERT, CA_CERT, CRL].map(|f| out.join(f));
        write(&files[0], &key.serialize_pem(), 0o600, true)?;
        write(&files[1], &cert.pem(), 0o644, true)?;
        write(&files[2], &read(&self.dir.join(CA_CERT))?, 0o644, true)?;
        write(&files[3], &read(&self.dir.join(CRL))?, 0o644, true)?;
        Ok(Issued {
            info: CertInfo::read(cert.der())?,
            files: files.to_vec(),
        })
    }

    /// Adds the certificate in `cert` to the revocation list; returns it
    /// and the list to copy to every node.
    pub fn revoke(&self, cert: &Path) -> Result<Issued> {
        let der = super::read_certs(cert)?;
        let info = CertInfo::read(&der[0])?;
        let mut revoked = self.revoked()?;
        if !revoked
            .iter()
            .any(|r| r.serial_number.as_ref() == info.serial)
        {
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&info.serial),
                revocation_time: OffsetDateTime::now_utc(),
                reason_code: None,
                invalidity_date: None,
            });
        }
        self.write_crl(revoked)?;
        Ok(Issued {
            info,
            files: vec![self.dir.join(CRL)],
        })
    }

    /// The revocations in the current list.
    fn revoked(&self) -> Result<Vec<RevokedCertParams>> {
        let crls = super::read_crls(&self.dir.join(CRL))?;
        let mut out = Vec::new();
        for crl in &crls {
            let (_, parsed) = x509_parser::parse_x509_crl(crl)
                .map_err(|e| TlsError::Invalid(format!("unreadable revocation list: {e}")))?;
            for r in parsed.iter_revoked_certificates() {
                let when = OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
                out.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(r.raw_serial()),
                    revocation_time: when,
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        Ok(out)
    }

    fn write_crl(&self, revoked_certs: Vec<RevokedCertParams>) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            // Nodes do not enforce the list's expiry: a list stays in force
            // until a newer one replaces it.
            next_update: now + days(3650),
            crl_number: SerialNumber::from_slice(&now.unix_timestamp_nanos().to_be_bytes()[4..]),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(rcgen_error("revocation list"))?;
        let pem = crl.pem().map_err(rcgen_error("revocation list"))?;
        write(&self.dir.join(CRL), &pem, 0o644, true)
    }
}
