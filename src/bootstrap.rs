//! The bootstrap files this build expects, carried inside the binary.
//!
//! The Kubernetes bootstrap Job (k8s/dev) runs `precinct bootstrap-files DIR`
//! from the backend's own image, then the OpenBao and PostgreSQL images run
//! the scripts from DIR. The configuration as code therefore always matches
//! the migrations and roles of the image being deployed, and the image needs
//! no shell to hand them over.

use std::{fs, io, os::unix::fs::PermissionsExt, path::Path};

/// `(file name, contents, executable)` of every bootstrap file.
pub const FILES: &[(&str, &str, bool)] = &[
    (
        "configure-openbao.sh",
        include_str!("../scripts/configure-openbao.sh"),
        true,
    ),
    (
        "bootstrap-db.sh",
        include_str!("../scripts/bootstrap-db.sh"),
        true,
    ),
    ("bootstrap.sql", include_str!("../sql/bootstrap.sql"), false),
];

/// Writes every bootstrap file into `dir` (created if missing) and returns
/// the paths written.
pub fn write_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    fs::create_dir_all(dir)?;
    FILES
        .iter()
        .map(|(name, contents, executable)| {
            let path = dir.join(name);
            fs::write(&path, contents)?;
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            Ok(path)
        })
        .collect()
}
