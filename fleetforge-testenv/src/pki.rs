//! The control plane's certificates, made in-process: one CA signs the API server's
//! serving certificate and every client certificate (user = CN, group = O), and a
//! separate key signs service-account tokens.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of a client certificate and its key on disk.
#[derive(Clone, Debug)]
pub(crate) struct ClientCert {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The CA and the files the control-plane components read.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    pub(crate) ca_cert: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) sa_key: PathBuf,
    pub(crate) sa_pub: PathBuf,
}

impl Pki {
    /// Makes a fresh CA, serving certificate and service-account key under `dir`.
    pub(crate) fn create(dir: &Path) -> anyhow::Result<Pki> {
        fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "fleetforge-testenv-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).context("self-signing the CA")?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        fs::write(&ca_cert_path, ca_cert.pem())?;
        fs::write(&ca_key_path, ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca, ca_key);

        // In-cluster clients dial the `kubernetes` Service names and its cluster IP;
        // tests dial 127.0.0.1. The certificate must satisfy both.
        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;
        let serving_cert_path = dir.join("apiserver.crt");
        let serving_key_path = dir.join("apiserver.key");
        fs::write(&serving_cert_path, serving_cert.pem())?;
        fs::write(&serving_key_path, serving_key.serialize_pem())?;

        let sa = KeyPair::generate()?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        fs::write(&sa_key, sa.serialize_pem())?;
        fs::write(&sa_pub, sa.public_key_pem())?;

        Ok(Pki {
            issuer,
            dir: dir.to_owned(),
            ca_cert: ca_cert_path,
            ca_key: ca_key_path,
            serving_cert: serving_cert_path,
            serving_key: serving_key_path,
            sa_key,
            sa_pub,
        })
    }

    /// Issues a client certificate for `user` in `group` (the API server reads CN as the
    /// user name and O as the group).
    pub(crate) fn client_cert(
        &self,
        file_stem: &str,
        user: &str,
        group: Option<&str>,
    ) -> anyhow::Result<ClientCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params.distinguished_name.push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let paths = ClientCert {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        fs::write(&paths.cert, cert.pem())?;
        fs::write(&paths.key, key.serialize_pem())?;
        Ok(paths)
    }
}
