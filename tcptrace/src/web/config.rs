//! `--web.config.file`: the Prometheus exporter-toolkit web configuration (the file
//! node_exporter takes), read once at start, before anything is loaded.
//!
//! Format: prometheus/exporter-toolkit `docs/web-configuration.md`. Relative paths are
//! relative to the file's directory, as there. Unknown keys are refused; the keys
//! tcptrace cannot honour (client certificates without verification, SAN allow-lists,
//! TLS 1.0/1.1, CBC suites, P-521) are refused by name instead of being ignored: a
//! security setting that is silently dropped is worse than one that stops the start.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::http::{HeaderName, HeaderValue};
use rustls::{
    crypto::{ring as provider, CryptoProvider, SupportedKxGroup},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
    RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

use super::auth::{BasicAuth, RateLimit};

/// Why a web config file was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    // The errors are in the messages (not sources): `doctor` prints one line.
    #[error("cannot read the web config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("web config file {path}: {error}")]
    Parse {
        path: PathBuf,
        error: serde_norway::Error,
    },
    #[error("web config file {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// The file as written. Every key exporter-toolkit documents is known here, so that one
/// tcptrace does not support gets its own message, and a typo an "unknown field" one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    auth_excluded_paths: Option<Vec<String>>,
    rate_limit: Option<RateLimitFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    interval: Option<String>,
    burst: Option<u32>,
}

/// What the HTTP server does with a web config file: TLS, who may ask, extra response
/// headers, a request rate limit. [`WebConfig::default`] is plain HTTP, open to all.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// The file it came from, for the log.
    pub path: Option<PathBuf>,
    pub tls: Option<Arc<ServerConfig>>,
    /// Whether TLS clients must show a certificate from `client_ca_file`.
    pub client_auth: ClientAuth,
    pub auth: Option<Arc<BasicAuth>>,
    /// Paths answered without basic auth (`auth_excluded_paths`), matched exactly.
    pub auth_excluded_paths: Vec<String>,
    /// Added to every response (`http_server_config.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// `client_auth_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert`: none asked for.
    #[default]
    None,
    /// `VerifyClientCertIfGiven`: checked against the client CA when a client shows one.
    IfGiven,
    /// `RequireAndVerifyClientCert`: no connection without one the client CA issued.
    Required,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("basic_auth_users", &self.auth.as_ref().map(|a| a.users()))
            .field("auth_excluded_paths", &self.auth_excluded_paths)
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit.is_some())
            .finish()
    }
}

/// The response headers exporter-toolkit lets a file set, with the values it accepts
/// (any, when empty).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Go's names (`crypto/tls.CipherSuites()`) of the TLS 1.2 suites rustls has.
const TLS12_SUITES: &[(&str, SupportedCipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        provider::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suites: Go lists them but `cipher_suites` does not apply to TLS 1.3 there
/// either; all three are always on.
const TLS13_SUITE_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Go's curve names (`curve_preferences`) and rustls's groups.
fn curve(name: &str) -> Option<&'static dyn SupportedKxGroup> {
    match name {
        "X25519" => Some(provider::kx_group::X25519),
        "CurveP256" => Some(provider::kx_group::SECP256R1),
        "CurveP384" => Some(provider::kx_group::SECP384R1),
        _ => None,
    }
}

/// Reads and checks `path`. Certificates and keys are read and matched now, so that a
/// bad file stops the start, not the first scrape.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| WebConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let invalid = |problem: String| WebConfigError::Invalid {
        path: path.to_owned(),
        problem,
    };
    // An empty file (or one of comments) is an empty config, as in Go.
    let file: File = if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        File::default()
    } else {
        serde_norway::from_str(&text).map_err(|error| WebConfigError::Parse {
            path: path.to_owned(),
            error,
        })?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    from_file(file, dir, path).map_err(invalid)
}

fn from_file(file: File, dir: &Path, path: &Path) -> Result<WebConfig, String> {
    let (tls, client_auth) = match file.tls_server_config {
        Some(tls) => tls_config(tls, dir)?,
        None => (None, ClientAuth::None),
    };
    let mut headers = Vec::new();
    if let Some(http) = file.http_server_config {
        // HTTP/2 needs TLS and ALPN in Go; tcptrace serves HTTP/1.1 only, which every
        // Prometheus speaks: `http2: true` (the default there) is accepted and means that.
        let _ = http.http2;
        for (name, value) in http.headers.unwrap_or_default() {
            headers.push(header(&name, &value)?);
        }
    }
    let auth = match file.basic_auth_users {
        Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
        _ => None,
    };
    let rate_limit = match file.rate_limit {
        Some(limit) => rate_limit(limit)?.map(Arc::new),
        None => None,
    };
    Ok(WebConfig {
        path: Some(path.to_owned()),
        tls: tls.map(Arc::new),
        client_auth,
        auth,
        auth_excluded_paths: file.auth_excluded_paths.unwrap_or_default(),
        headers,
        rate_limit,
    })
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "http_server_config.headers: {name:?} cannot be set; one of {}",
            known.join(", ")
        ));
    };
    if !allowed.is_empty() && !allowed.contains(&value) {
        return Err(format!(
            "http_server_config.headers: {name} must be one of {}, not {value:?}",
            allowed.join(", ")
        ));
    }
    let value = HeaderValue::from_str(value).map_err(|_| {
        format!("http_server_config.headers: {name}: {value:?} is not a header value")
    })?;
    Ok((HeaderName::from_static(lowercase(name)), value))
}

/// `HeaderName::from_static` wants lowercase.
fn lowercase(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn rate_limit(file: RateLimitFile) -> Result<Option<RateLimit>, String> {
    let interval = match file.interval.as_deref() {
        None | Some("0" | "0s") => return Ok(None),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("rate_limit.interval {text:?}: {e} (e.g. 100ms, 1s)"))?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = file.burst.unwrap_or(0);
    if burst == 0 {
        return Err(
            "rate_limit.burst must be at least 1 when rate_limit.interval is set \
             (0 would refuse every request)"
                .into(),
        );
    }
    Ok(Some(RateLimit::new(interval, burst)))
}

/// `path` as written, or under the file's directory when relative.
fn join(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// PEM text, inline or from a file (exactly one of them).
fn pem(
    dir: &Path,
    inline: Option<String>,
    file: Option<PathBuf>,
    inline_key: &str,
    file_key: &str,
) -> Result<Option<(Vec<u8>, String)>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: {inline_key} and {file_key} are both set; keep one"
        )),
        (Some(text), None) => Ok(Some((text.into_bytes(), format!("{inline_key} (inline)")))),
        (None, Some(file)) => {
            let file = join(dir, &file);
            let bytes = std::fs::read(&file)
                .map_err(|e| format!("{file_key}: cannot read {}: {e}", file.display()))?;
            Ok(Some((bytes, format!("{file_key} {}", file.display()))))
        }
        (None, None) => Ok(None),
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)"
        ));
    }
    Ok(certs)
}

/// A version's rank (TLS 1.2 → 2, TLS 1.3 → 3).
fn version(name: &str, key: &str) -> Result<u8, String> {
    match name {
        "TLS13" => Ok(3),
        "TLS12" => Ok(2),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {name} is not supported (tcptrace speaks TLS 1.2 and 1.3); \
             use TLS12 or TLS13"
        )),
        other => Err(format!(
            "tls_server_config.{key}: unknown version {other:?}; one of TLS12, TLS13"
        )),
    }
}

/// The rustls server configuration, or None when the section sets no TLS at all
/// (exporter-toolkit then serves plain HTTP too).
fn tls_config(tls: TlsFile, dir: &Path) -> Result<(Option<ServerConfig>, ClientAuth), String> {
    let enabled = tls.cert.is_some()
        || tls.cert_file.is_some()
        || tls.key.is_some()
        || tls.key_file.is_some()
        || tls.client_ca.is_some()
        || tls.client_ca_file.is_some()
        || tls.client_auth_type.is_some();
    if !enabled {
        return Ok((None, ClientAuth::None));
    }
    if tls.client_allowed_sans.is_some() {
        return Err(
            "tls_server_config.client_allowed_sans is not supported by tcptrace; \
                    issue client certificates from a CA of their own and use \
                    client_auth_type RequireAndVerifyClientCert with that CA"
                .into(),
        );
    }
    let (cert_pem, cert_what) = pem(dir, tls.cert, tls.cert_file, "cert", "cert_file")?
        .ok_or("tls_server_config: missing one of cert or cert_file")?;
    let (key_pem, key_what) = pem(dir, tls.key, tls.key_file, "key", "key_file")?
        .ok_or("tls_server_config: missing one of key or key_file")?;
    let chain = certificates(&cert_pem, &cert_what)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!("{key_what}: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}")
    })?;

    let min = version(tls.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = version(tls.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    let versions: Vec<&'static SupportedProtocolVersion> = [(2, &TLS12), (3, &TLS13)]
        .into_iter()
        .filter(|(rank, _)| (min..=max).contains(rank))
        .map(|(_, version)| version)
        .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }

    let mut crypto: CryptoProvider = provider::default_provider();
    if let Some(names) = tls.cipher_suites.filter(|n| !n.is_empty()) {
        let mut suites: Vec<SupportedCipherSuite> = crypto
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.tls13().is_some())
            .collect();
        for name in &names {
            if TLS13_SUITE_NAMES.contains(&name.as_str()) {
                continue;
            }
            let Some((_, suite)) = TLS12_SUITES.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = TLS12_SUITES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "tls_server_config.cipher_suites: {name:?} is not supported by tcptrace \
                     (no CBC or RSA key-exchange suites); one of {}",
                    known.join(", ")
                ));
            };
            suites.push(*suite);
        }
        crypto.cipher_suites = suites;
    }
    if let Some(names) = tls.curve_preferences.filter(|n| !n.is_empty()) {
        crypto.kx_groups = names
            .iter()
            .map(|name| {
                curve(name).ok_or_else(|| {
                    format!(
                        "tls_server_config.curve_preferences: {name:?} is not supported by \
                         tcptrace; one of X25519, CurveP256, CurveP384"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    }
    let crypto = Arc::new(crypto);

    let client_ca = pem(
        dir,
        tls.client_ca,
        tls.client_ca_file,
        "client_ca",
        "client_ca_file",
    )?;
    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let client_auth = match auth_type {
        "RequireAndVerifyClientCert" => ClientAuth::Required,
        "VerifyClientCertIfGiven" => ClientAuth::IfGiven,
        _ => ClientAuth::None,
    };
    let verifier = match (auth_type, client_ca) {
        ("" | "NoClientCert", None) => None,
        ("" | "NoClientCert", Some(_)) => {
            return Err(
                "tls_server_config: client CAs are set without a client_auth_type; \
                        set client_auth_type: RequireAndVerifyClientCert (or \
                        VerifyClientCertIfGiven)"
                    .into(),
            )
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(format!(
                "tls_server_config: client_auth_type {auth_type} needs client_ca_file (or \
                 client_ca): the CA that issued the clients' certificates"
            ))
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some((pem, what))) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(&pem, &what)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&crypto));
            let builder = if auth_type == "VerifyClientCertIfGiven" {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(
                builder
                    .build()
                    .map_err(|e| format!("{what}: cannot verify clients with it: {e}"))?,
            )
        }
        ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert", _) => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth_type} (a client certificate taken \
                 without checking who issued it) is not supported by tcptrace; use \
                 RequireAndVerifyClientCert with client_ca_file"
            ))
        }
        (other, _) => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?}; one of \
                 NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ))
        }
    };

    let builder = ServerConfig::builder_with_provider(Arc::clone(&crypto))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{cert_what} and {key_what} do not make a usable pair: the key is not the \
             certificate's"
        ),
        e => format!("{cert_what} and {key_what} do not make a usable pair: {e}"),
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Some(config), client_auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, String> {
        let file: File = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        from_file(
            file,
            Path::new("/etc/tcptrace"),
            Path::new("/etc/tcptrace/web.yml"),
        )
    }

    #[test]
    fn a_file_without_tls_or_users_serves_plain_http_to_all() {
        for yaml in [
            "{}",
            "tls_server_config:\n",
            // No certificate, key or client CA: plain HTTP, as in exporter-toolkit.
            "tls_server_config:\n  min_version: TLS13\n",
            "basic_auth_users: {}\n",
            "rate_limit:\n  interval: 0s\n",
            "http_server_config:\n  http2: false\n",
        ] {
            let config = parse(yaml).unwrap();
            assert!(config.tls.is_none(), "{yaml}");
            assert!(config.auth.is_none(), "{yaml}");
            assert!(config.rate_limit.is_none(), "{yaml}");
        }
    }

    #[test]
    fn headers_users_and_the_rate_limit_are_taken() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let config = parse(&format!(
            "basic_auth_users:\n  b: {hash}\n  a: {hash}\nauth_excluded_paths: [/healthz]\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\nrate_limit:\n  interval: 100ms\n  \
             burst: 5\n"
        ))
        .unwrap();
        assert_eq!(config.auth.unwrap().users(), ["a", "b"]);
        assert_eq!(config.auth_excluded_paths, ["/healthz"]);
        let headers: Vec<(&str, &str)> = config
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("strict-transport-security", "max-age=31536000"),
                ("x-frame-options", "deny")
            ]
        );
        assert!(config.rate_limit.is_some());
    }

    #[test]
    fn relative_paths_are_under_the_files_directory() {
        let dir = Path::new("/etc/tcptrace");
        assert_eq!(
            join(dir, Path::new("tls/a.crt")),
            Path::new("/etc/tcptrace/tls/a.crt")
        );
        assert_eq!(join(dir, Path::new("/srv/a.crt")), Path::new("/srv/a.crt"));
        let err = parse("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n")
            .err()
            .unwrap();
        assert!(err.contains("/etc/tcptrace/a.crt"), "{err}");
    }
}
