//! `--check-config`: bad files are rejected with every error's key path; the shipped file is
//! valid.

use std::process::Command;

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn bad_config_rejected_with_every_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edge.toml");
    std::fs::write(
        &p,
        r#"
[server]
listen = ["not-an-addr"]
threads = 0
[cache.memory]
max_capacity = 0
sendfile_min_size = 65536
sendfile_max_open_files = 2000000
[cache.disk]
chunk_size = 1
[[route]]
prefix = "media"
mode = "sometimes"
"#,
    )
    .unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 2, "{out}");
    for key in [
        "server.listen[0]",
        "server.threads",
        "cache.memory.max_capacity: must be > 0",
        "cache.memory.sendfile_min_size: must be in 0..=0",
        "cache.memory.sendfile_max_open_files: must be in 0..=1000000",
        "cache.disk.chunk_size",
        "route[0].prefix",
        "route[0].mode",
    ] {
        assert!(out.contains(key), "missing {key} in:\n{out}");
    }
    assert!(
        out.contains(&format!("{}: cache.memory.max_capacity", p.display())),
        "{out}"
    );
}

#[test]
fn unknown_key_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edge.toml");
    std::fs::write(
        &p,
        "[cache]\ndirectory = \"/x\"\n[admin]\ntoken = \"t\"\n[[route]]\nprefix = \"/\"\nttl = 1\n",
    )
    .unwrap();
    let (code, out) = check(&p);
    assert_eq!(code, 2, "{out}");
    // every unknown key, each with its path
    for key in [
        "cache.directory: unknown key",
        "admin.token: unknown key",
        "route[0].ttl: unknown key",
    ] {
        assert!(out.contains(key), "missing {key} in:\n{out}");
    }
}

#[test]
fn shipped_config_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/edge.toml");
    let (code, out) = check(&p);
    assert_eq!(code, 0, "{out}");
}
