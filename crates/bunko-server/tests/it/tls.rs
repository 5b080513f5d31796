//! HTTPS: TLS 1.2+ only, HSTS, HTTP→HTTPS redirect, certificate reload on SIGHUP while an
//! established connection keeps working. Certificates come from the `openssl` tool; the
//! client is Python's `ssl` module and curl.

use super::support::{Server, require_tool, text};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn make_cert(dir: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

const CLIENT: &str = r#"
import hashlib, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
def connect():
    ctx = ssl.create_default_context(cafile=ca)  # read afresh: the certificate may have changed
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    return s, hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()[:16]
def get(s):
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b" ")[1].decode()
s, fp = connect()
print("first", get(s), fp, s.version(), flush=True)
sys.stdin.readline()
print("same-connection", get(s), fp, flush=True)
s2, fp2 = connect()
print("new-connection", get(s2), fp2, flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_reload_redirect_and_hsts() {
    let (Some(_), Some(_), Some(_)) = (
        require_tool("openssl"),
        require_tool("curl"),
        require_tool("python3"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let redirect_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("bunko.toml"),
        format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nredirect_http_from = \"127.0.0.1:{redirect_port}\"\n",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ),
    )
    .unwrap();
    let cfg = dir.path().join("bunko.toml");
    let mut s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    let cacert = dir.path().join("cert.pem");
    let curl = |extra: &[&str], url: &str| {
        Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(&cacert)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    };
    let out = curl(&[], &format!("https://localhost:{port}/healthz"));
    let head = text(&out.stdout).to_lowercase();
    assert!(
        head.contains(" 200") && head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    let out = curl(
        &["--tls-max", "1.1"],
        &format!("https://localhost:{port}/healthz"),
    );
    assert!(!out.status.success(), "TLS 1.1 must be refused");
    let out = curl(&[], &format!("http://127.0.0.1:{port}/healthz"));
    assert!(
        !text(&out.stdout).contains(" 200"),
        "no plain HTTP on the TLS port"
    );
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{redirect_port}/docs?x=1"))
        .output()
        .unwrap();
    let head = text(&out.stdout).to_lowercase();
    assert!(
        head.contains("308")
            && head.contains(&format!("location: https://127.0.0.1:{port}/docs?x=1")),
        "{head}"
    );

    let mut client = Command::new("python3")
        .args(["-c", CLIENT, &port, cacert.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let f: Vec<&str> = first.split_whitespace().collect();
    assert_eq!((f[0], f[1]), ("first", "200"), "{first}");
    assert!(f[3] == "TLSv1.3" || f[3] == "TLSv1.2", "{first}");
    make_cert(dir.path());
    s.signal("HUP");
    std::thread::sleep(Duration::from_millis(700));
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let same = lines.next().unwrap().unwrap();
    let new = lines.next().unwrap_or_else(|| Ok(String::new())).unwrap();
    let _ = client.wait();
    let sm: Vec<&str> = same.split_whitespace().collect();
    let nw: Vec<&str> = new.split_whitespace().collect();
    assert_eq!(
        (sm[0], sm[1], sm[2]),
        ("same-connection", "200", f[2]),
        "the open connection keeps working: {same}"
    );
    assert_eq!((nw[0], nw[1]), ("new-connection", "200"), "{new}");
    assert_ne!(nw[2], f[2], "new connections get the new certificate");
    let (status, logs) = s.stop();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("TLS certificate reloaded"), "{logs}");
}
