//! Writes a throw-away certificate authority and a relay certificate it
//! signed (for `localhost` and 127.0.0.1) as PEM files, for benchmarks of the
//! tunnel over TLS (`scripts/bench tunnel`, `scripts/bench counts`):
//!
//! ```sh
//! cargo run --release --example bench_cert -- DIR
//! ```
//!
//! `DIR/ca.pem` is what agents trust (`--tls-ca-file`), `DIR/cert.pem` and
//! `DIR/key.pem` are the relay's `tunnel.certfile` and `tunnel.keyfile`.
//! The keys are fresh each run (ECDSA P-256, rcgen's default).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: bench_cert DIR")?);
    std::fs::create_dir_all(&dir)?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(names)?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}
