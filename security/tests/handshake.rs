//! The TLS listener against real rustls clients: who gets through the handshake, and a
//! certificate replaced on disk served to the next connection without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogfs_security::issue::{Authority, CertRequest, Issued};
use dogfs_security::{Role, ServerTls, TlsPaths};
use futures::StreamExt;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn write(dir: &Path, name: &str, issued: &Issued) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

fn der(pem: &str) -> CertificateDer<'static> {
    dogfs_security::pem::certificates_from(Path::new("t"), pem.as_bytes())
        .unwrap()
        .remove(0)
}

fn connector(ca: &Authority, identity: Option<&Issued>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(der(&ca.cert_pem())).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => {
            let key =
                rustls_pki_types::pem::PemObject::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder
                .with_client_auth_cert(vec![der(&id.cert_pem)], key)
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Serves TLS on a free port; each accepted connection writes one byte and closes.
async fn serve(tls: Arc<ServerTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = tls.incoming(listener);
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            tokio::spawn(async move {
                let _ = conn.write_all(b"k").await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// The certificate the server presented, or the handshake's error.
async fn handshake(
    addr: std::net::SocketAddr,
    connector: &TlsConnector,
) -> Result<CertificateDer<'static>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 sends the server's verdict on the client certificate after the client's
    // handshake is done: read to see it.
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap()[0].clone().into_owned())
}

#[tokio::test]
async fn handshakes_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster").unwrap();
    let other = Authority::new("elsewhere").unwrap();
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let first = ca
        .issue(&CertRequest::new("meta-0").roles(&[Role::Meta]))
        .unwrap();
    let (cert, key) = write(dir.path(), "server", &first);
    let tls = Arc::new(
        ServerTls::load(TlsPaths {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca_path,
        })
        .unwrap(),
    );
    let addr = serve(Arc::clone(&tls)).await;

    // A client trusting the cluster CA, without and with a component certificate.
    let plain = connector(&ca, None);
    assert_eq!(handshake(addr, &plain).await.unwrap(), der(&first.cert_pem));
    let chunk = ca
        .issue(&CertRequest::new("chunk-0").roles(&[Role::Chunk]))
        .unwrap();
    assert!(handshake(addr, &connector(&ca, Some(&chunk))).await.is_ok());

    // A client trusting another CA refuses the server.
    let e = handshake(addr, &connector(&other, None)).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A client whose certificate comes from another CA is refused by the server.
    let stranger = other
        .issue(&CertRequest::new("x").roles(&[Role::Meta]))
        .unwrap();
    assert!(
        handshake(addr, &connector(&ca, Some(&stranger)))
            .await
            .is_err()
    );
    // An expired client certificate from the right CA too.
    let past = std::time::SystemTime::now() - Duration::from_secs(7200);
    let expired = ca
        .issue(&CertRequest::new("old").valid(past - Duration::from_secs(3600), past))
        .unwrap();
    assert!(
        handshake(addr, &connector(&ca, Some(&expired)))
            .await
            .is_err()
    );
    // Plain text: no TLS answer at all.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a plain-text client got {n} bytes that are not a TLS alert"
    );

    // Renewal: new files on disk, the next connection gets the new certificate.
    let second = ca
        .issue(&CertRequest::new("meta-0").roles(&[Role::Meta]))
        .unwrap();
    write(dir.path(), "server", &second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = handshake(addr, &plain).await.unwrap();
        if got == der(&second.cert_pem) {
            break;
        }
        assert_eq!(got, der(&first.cert_pem));
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A half-written renewal (a key that does not match) keeps the last good pair serving.
    let third = ca.issue(&CertRequest::new("meta-0")).unwrap();
    std::fs::write(&cert, &third.cert_pem).unwrap();
    assert_eq!(
        handshake(addr, &plain).await.unwrap(),
        der(&second.cert_pem)
    );
    std::fs::write(&key, &third.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake(addr, &plain).await.unwrap() != der(&third.cert_pem) {
        assert!(
            Instant::now() < deadline,
            "the completed renewal was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
