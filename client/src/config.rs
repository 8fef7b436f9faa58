//! Client settings, from code or from `DOGFS_*` environment variables.

use std::time::Duration;

pub use dogfs_security::ClientTlsPaths;

use crate::error::Error;

/// Environment variable with the metadata endpoints, comma-separated.
pub const ENV_ENDPOINT: &str = "DOGFS_ENDPOINT";
/// Per-attempt timeout of a metadata call, in milliseconds.
pub const ENV_TIMEOUT_MS: &str = "DOGFS_TIMEOUT_MS";
/// How long a shard stream may make no progress before its server counts as failed.
pub const ENV_SHARD_TIMEOUT_MS: &str = "DOGFS_SHARD_TIMEOUT_MS";
/// Retries of a failed metadata call.
pub const ENV_MAX_RETRIES: &str = "DOGFS_MAX_RETRIES";
/// Floor of the adaptive hedge delay of shard reads, in milliseconds.
pub const ENV_HEDGE_MIN_MS: &str = "DOGFS_HEDGE_MIN_MS";
/// Ceiling of the adaptive hedge delay of shard reads, in milliseconds.
pub const ENV_HEDGE_MAX_MS: &str = "DOGFS_HEDGE_MAX_MS";
/// PEM CA bundle of the cluster's TLS: set it to connect over TLS.
pub const ENV_CA: &str = "DOGFS_CA";
/// Bearer token for clusters that check tokens.
pub const ENV_TOKEN: &str = "DOGFS_TOKEN";
/// File holding the bearer token (a mounted Secret); `DOGFS_TOKEN` wins when both are set.
pub const ENV_TOKEN_FILE: &str = "DOGFS_TOKEN_FILE";

/// A bearer token; never printed (its `Debug` shows only its id, when it has one).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Checks that `s` can travel in a header: 1 to 4096 visible ASCII characters. `source`
    /// names where it came from, for the error.
    pub fn new(s: &str, source: &str) -> Result<Token, Error> {
        let t = s.trim();
        if t.is_empty() || t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(format!(
                "{source}: a token is 1 to 4096 visible ASCII characters without spaces"
            )));
        }
        Ok(Token(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match dogfs_security::token::parse(&self.0) {
            Ok(p) => write!(f, "Token({})", p.id),
            Err(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Metadata service endpoints, `http://host:port` or `host:port`. Any one is enough: every
    /// metadata node forwards to the right leader; more give the client somewhere to go when
    /// one is down.
    pub endpoints: Vec<String>,
    /// TCP connect timeout (metadata nodes and chunk servers).
    pub connect_timeout: Duration,
    /// Timeout of one attempt of a metadata call.
    pub request_timeout: Duration,
    /// A shard stream that makes no progress for this long counts as a failed server: a PUT
    /// replaces the target, a GET decodes from parity.
    pub shard_timeout: Duration,
    /// Retries of a metadata call that failed with UNAVAILABLE, ABORTED, a transport error or
    /// a timeout (so at most `max_retries + 1` attempts), within `retry_deadline`.
    pub max_retries: u32,
    /// Total time a metadata call may spend retrying.
    pub retry_deadline: Duration,
    /// First retry delay; doubles per retry up to `backoff_max`, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Read windows a GET fetches ahead of the one being written.
    pub read_ahead: usize,
    /// Data bytes per read window (whole stripes; at least one).
    pub read_window_bytes: u64,
    /// How long the cluster map (leaders, inline_max, partitions) is trusted before re-reading.
    pub cluster_map_ttl: Duration,
    /// Floor of the hedge delay: a GET shard request that delivered nothing for the hedge
    /// delay is read around (parity asked at once). The delay follows this client's recent
    /// shard latencies, clamped to `[hedge_min, hedge_max]` (docs/client.md, "Hedged reads").
    pub hedge_min: Duration,
    /// Ceiling of the hedge delay: the most a frozen server holding a needed shard costs a
    /// read window.
    pub hedge_max: Duration,
    /// TLS to metadata and chunk servers: the CA bundle their certificates chain to (and a
    /// client certificate, when one is given). With it, `host:port` endpoints are `https://`;
    /// without it, plain text.
    pub tls: Option<ClientTlsPaths>,
    /// Bearer token sent with every metadata call, for clusters that check tokens
    /// (`DOGFS_TOKEN`, `--token`).
    pub token: Option<Token>,
}

impl ClientConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            shard_timeout: Duration::from_secs(10),
            max_retries: 10,
            retry_deadline: Duration::from_secs(60),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            read_ahead: 3,
            read_window_bytes: crate::get::WINDOW_DATA_BYTES,
            cluster_map_ttl: Duration::from_secs(30),
            hedge_min: crate::hedge::DEFAULT_HEDGE_MIN,
            hedge_max: crate::hedge::DEFAULT_HEDGE_MAX,
            tls: None,
            token: None,
        }
    }

    /// `DOGFS_ENDPOINT` (required, comma-separated), `DOGFS_TIMEOUT_MS`,
    /// `DOGFS_SHARD_TIMEOUT_MS`, `DOGFS_MAX_RETRIES`, `DOGFS_HEDGE_MIN_MS`,
    /// `DOGFS_HEDGE_MAX_MS`, `DOGFS_CA`, `DOGFS_TOKEN` or `DOGFS_TOKEN_FILE` (optional).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable source (tests, config files).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let raw = get(ENV_ENDPOINT).ok_or_else(|| {
            Error::invalid(format!(
                "{ENV_ENDPOINT} is not set: give the metadata endpoints, e.g. \
                 {ENV_ENDPOINT}=meta-0:7000,meta-1:7000"
            ))
        })?;
        let endpoints: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::invalid(format!(
                "{ENV_ENDPOINT}={raw:?} names no endpoint"
            )));
        }
        let mut cfg = ClientConfig::new(endpoints);
        if let Some(ms) = parse_u64(&get, ENV_TIMEOUT_MS)? {
            cfg.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = parse_u64(&get, ENV_SHARD_TIMEOUT_MS)? {
            cfg.shard_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = parse_u64(&get, ENV_MAX_RETRIES)? {
            cfg.max_retries = u32::try_from(n)
                .map_err(|_| Error::invalid(format!("{ENV_MAX_RETRIES}={n} is too large")))?;
        }
        if let Some(ms) = parse_u64(&get, ENV_HEDGE_MIN_MS)? {
            cfg.hedge_min = Duration::from_millis(ms);
        }
        if let Some(ms) = parse_u64(&get, ENV_HEDGE_MAX_MS)? {
            cfg.hedge_max = Duration::from_millis(ms);
        }
        if let Some(ca) = get(ENV_CA).filter(|c| !c.trim().is_empty()) {
            cfg.tls = Some(ClientTlsPaths::ca_only(ca.trim()));
        }
        if let Some(t) = get(ENV_TOKEN).filter(|t| !t.trim().is_empty()) {
            cfg.token = Some(Token::new(&t, ENV_TOKEN)?);
        } else if let Some(path) = get(ENV_TOKEN_FILE).filter(|p| !p.trim().is_empty()) {
            let text = std::fs::read_to_string(path.trim()).map_err(|e| {
                Error::invalid(format!("{ENV_TOKEN_FILE}={path:?}: reading it: {e}"))
            })?;
            cfg.token = Some(Token::new(&text, &format!("{ENV_TOKEN_FILE}={path:?}"))?);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid("no metadata endpoint configured"));
        }
        for (name, d) in [
            ("request_timeout", self.request_timeout),
            ("shard_timeout", self.shard_timeout),
            ("connect_timeout", self.connect_timeout),
            ("hedge_min", self.hedge_min),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(format!("{name} must be greater than 0")));
            }
        }
        if self.hedge_max < self.hedge_min {
            return Err(Error::invalid(format!(
                "hedge_max ({:?}) is below hedge_min ({:?})",
                self.hedge_max, self.hedge_min
            )));
        }
        for e in &self.endpoints {
            normalize_endpoint(e, self.tls.is_some())?;
        }
        Ok(())
    }
}

fn parse_u64(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<u64>, Error> {
    let Some(v) = get(name) else { return Ok(None) };
    let t = v.trim();
    match t.parse::<u64>() {
        Ok(0) => Err(Error::invalid(format!(
            "{name}={v:?}: must be greater than 0"
        ))),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(Error::invalid(format!(
            "{name}={v:?}: not a whole number of milliseconds or a count"
        ))),
    }
}

/// `host:port` → `http://host:port`; a URI with a scheme is kept. Checks the result parses.
/// `e` as a URI: a bare `host:port` is `https://` with TLS and `http://` without; an explicit
/// `https://` needs TLS settings.
pub(crate) fn normalize_endpoint(e: &str, tls: bool) -> Result<String, Error> {
    let e = e.trim();
    if e.starts_with("https://") && !tls {
        return Err(Error::invalid(format!(
            "endpoint {e:?} is https:// but no CA bundle is set ({ENV_CA} or --ca)"
        )));
    }
    let uri = if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    };
    let parsed: tonic::codegen::http::Uri = uri
        .parse()
        .map_err(|err| Error::invalid(format!("endpoint {e:?} is not a valid address: {err}")))?;
    if parsed.host().is_none() || parsed.port_u16().is_none() {
        return Err(Error::invalid(format!(
            "endpoint {e:?} must be host:port, http://host:port or https://host:port"
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_endpoints_and_timeouts() {
        let c = ClientConfig::from_lookup(lookup(&[
            (ENV_ENDPOINT, " meta-0:7000, http://meta-1:7000 ,"),
            (ENV_TIMEOUT_MS, "1500"),
        ]))
        .unwrap();
        assert_eq!(c.endpoints, vec!["meta-0:7000", "http://meta-1:7000"]);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn env_errors_name_the_value() {
        let e = ClientConfig::from_lookup(lookup(&[])).unwrap_err();
        assert!(e.to_string().contains(ENV_ENDPOINT), "{e}");
        let e = ClientConfig::from_lookup(lookup(&[(ENV_ENDPOINT, " , ")])).unwrap_err();
        assert!(e.to_string().contains("names no endpoint"), "{e}");
        let e = ClientConfig::from_lookup(lookup(&[
            (ENV_ENDPOINT, "m:7000"),
            (ENV_TIMEOUT_MS, "soon"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("DOGFS_TIMEOUT_MS=\"soon\""), "{e}");
        let e = ClientConfig::from_lookup(lookup(&[(ENV_ENDPOINT, "no port here")])).unwrap_err();
        assert!(e.to_string().contains("no port here"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn hedge_bounds_from_env() {
        let c = ClientConfig::from_lookup(lookup(&[(ENV_ENDPOINT, "m:7000")])).unwrap();
        assert_eq!(c.hedge_min, Duration::from_millis(20));
        assert_eq!(c.hedge_max, Duration::from_millis(500));
        let c = ClientConfig::from_lookup(lookup(&[
            (ENV_ENDPOINT, "m:7000"),
            (ENV_HEDGE_MIN_MS, "5"),
            (ENV_HEDGE_MAX_MS, "250"),
        ]))
        .unwrap();
        assert_eq!(c.hedge_min, Duration::from_millis(5));
        assert_eq!(c.hedge_max, Duration::from_millis(250));
        let e = ClientConfig::from_lookup(lookup(&[
            (ENV_ENDPOINT, "m:7000"),
            (ENV_HEDGE_MIN_MS, "100"),
            (ENV_HEDGE_MAX_MS, "50"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("hedge_max"), "{e}");
        let e =
            ClientConfig::from_lookup(lookup(&[(ENV_ENDPOINT, "m:7000"), (ENV_HEDGE_MIN_MS, "0")]))
                .unwrap_err();
        assert!(e.to_string().contains("DOGFS_HEDGE_MIN_MS"), "{e}");
    }

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(normalize_endpoint("h:1", false).unwrap(), "http://h:1");
        assert_eq!(
            normalize_endpoint("http://h:1", false).unwrap(),
            "http://h:1"
        );
        assert!(normalize_endpoint("h", false).is_err());
        assert_eq!(normalize_endpoint("h:1", true).unwrap(), "https://h:1");
        assert_eq!(
            normalize_endpoint("https://h:1", true).unwrap(),
            "https://h:1"
        );
        let e = normalize_endpoint("https://h:1", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOGFS_CA"), "{e}");
    }
}
