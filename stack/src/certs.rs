//! Self-signed TLS material for local development (`komora certs`).
//!
//! Production uses real certificates (see `certs/README.md`); this only makes the dev
//! stack's HTTPS listener work on a fresh machine. The private key is written with mode
//! 0600 and is ignored by git.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// File names the edge's config expects under the certificate folder.
pub const CERT_FILE: &str = "localhost.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "localhost-key.pem";

/// Paths of a certificate and its private key.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Creates a self-signed certificate for `localhost`, `127.0.0.1` and `::1` in `dir`,
/// unless both files already exist and `force` is false. Returns the paths either way.
pub fn create_self_signed(dir: &Path, force: bool) -> anyhow::Result<(CertPaths, bool)> {
    let paths = CertPaths {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    if !force && paths.cert.exists() && paths.key.exists() {
        return Ok((paths, false));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    std::fs::write(&paths.cert, certified.cert.pem())
        .with_context(|| format!("writing {}", paths.cert.display()))?;
    write_private(&paths.key, certified.signing_key.serialize_pem().as_bytes())?;
    Ok((paths, true))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
