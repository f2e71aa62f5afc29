//! Postgres over TLS: a server started with `ssl=on` and a certificate this test makes (its
//! own CA); the sink connects and migrates with `sslmode=require` and `verify-full` and its
//! session is encrypted; `verify-full` refuses a server whose certificate its CA did not
//! sign.

use std::{path::Path, process::Command};

use devstack::{
    postgres::{Cluster, ClusterOptions, PgBin, SUPERUSER, shell_quote},
    process::{Guardian, free_port},
};
use sqlx::Connection;
use test_support::{scratch_dir, unique};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA, and a server certificate for localhost and 127.0.0.1 signed by it; and a second CA
/// that signed nothing.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subject) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=habitat test {ca}"),
        );
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt]);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-new", "-subj", "/CN=localhost"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

#[test]
fn the_sink_connects_over_tls_with_require_and_verify_full() {
    // As the sink's main does: one rustls provider for the process.
    habitat_runtime::crypto::install_crypto_provider();
    let dir = scratch_dir().join(unique("tls-pg"));
    std::fs::create_dir_all(&dir).expect("dir");
    certificates(&dir);
    let port = free_port().expect("port");
    let cluster = Cluster::new(
        PgBin::ensure().expect("Postgres binaries"),
        &dir.join("cluster"),
        port,
        ClusterOptions {
            ephemeral: true,
            settings: vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", dir.join("cluster/server.crt").display()),
                format!("ssl_key_file={}", dir.join("cluster/server.key").display()),
            ],
        },
    );
    // The server's key and certificate live in its directory, owned by its user.
    std::fs::create_dir_all(cluster.dir()).expect("cluster dir");
    for file in ["server.crt", "server.key"] {
        std::fs::copy(dir.join(file), cluster.dir().join(file)).expect("copy");
    }
    cluster.init().expect("initdb");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            cluster.dir().join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("key mode");
    }
    cluster.start().expect("Postgres with ssl=on");
    let _stop = Guardian::new(&format!(
        "{}; rm -rf {}",
        cluster.stop_script(),
        shell_quote(dir.as_os_str())
    ))
    .expect("guardian");
    cluster.create_database("tls").expect("database");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ca = dir.join("ca.crt");
    let other = dir.join("other-ca.crt");
    let url = |host: &str, mode: &str, root: &Path| {
        format!(
            "postgres://{SUPERUSER}@{host}:{port}/tls?sslmode={mode}&sslrootcert={}",
            root.display()
        )
    };
    let encrypted = |url: String| -> Result<bool, sqlx::Error> {
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
        })
    };
    assert_eq!(
        encrypted(url("127.0.0.1", "disable", &ca)).ok(),
        Some(false)
    );
    assert_eq!(encrypted(url("127.0.0.1", "require", &ca)).ok(), Some(true));
    assert_eq!(
        encrypted(url("localhost", "verify-full", &ca)).ok(),
        Some(true)
    );
    assert_eq!(
        encrypted(url("127.0.0.1", "verify-full", &ca)).ok(),
        Some(true)
    );
    assert_eq!(
        encrypted(url("localhost", "verify-ca", &ca)).ok(),
        Some(true)
    );
    let refused = encrypted(url("localhost", "verify-full", &other)).expect_err("another CA");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );

    // The sink's own path: it migrates its schema over a verified connection.
    let verified = url("localhost", "verify-full", &ca);
    rt.block_on(postgres_sink::store::migrate(&verified, "habitat"))
        .expect("the sink migrates over TLS");
    let store = rt
        .block_on(postgres_sink::store::Store::connect(
            &verified, "habitat", "tls-test",
        ))
        .expect("the sink connects over TLS");
    drop(store);
}
