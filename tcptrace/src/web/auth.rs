//! Basic auth against bcrypt hashes (`basic_auth_users`) and the request rate limit
//! (`rate_limit`), as exporter-toolkit does them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::HeaderValue;
use base64::Engine as _;
use tokio::sync::Semaphore;

/// How long a successful check is remembered. bcrypt costs ~70 ms at cost 10 and
/// doubles with each step, and Prometheus sends the same credentials every scrape:
/// exporter-toolkit caches too.
const CACHE_FOR: Duration = Duration::from_secs(300);

/// At most this many remembered successes (one per user and password in use).
const CACHE_MAX: usize = 1024;

/// The users and their bcrypt hashes.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Checked against when the user is unknown, so that an unknown user costs as much
    /// time as a known one (no user enumeration by timing).
    decoy: String,
    /// SHA-256 of (user, password) → when it was verified. Only successes.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// One bcrypt at a time: it is CPU-bound, and the tracer needs the other core.
    bcrypt: Semaphore,
}

impl BasicAuth {
    /// Checks every hash now, so that a bad one stops the start.
    pub(super) fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        for (user, hash) in &users {
            let cost = hash
                .parse::<bcrypt::HashParts>()
                .map_err(|e| {
                    format!(
                        "basic_auth_users: the password of {user:?} is not a bcrypt hash ({e}); \
                         make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                    )
                })?
                .get_cost();
            if !(4..=31).contains(&cost) {
                return Err(format!(
                    "basic_auth_users: the bcrypt cost of {user:?} is {cost}, not within 4..=31"
                ));
            }
        }
        let decoy = users.values().next().cloned().unwrap_or_default();
        Ok(BasicAuth {
            users,
            decoy,
            verified: Mutex::default(),
            bcrypt: Semaphore::new(1),
        })
    }

    pub fn users(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    /// Whether an `Authorization` header names a user with the right password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let key = digest(&user, &password);
        let now = Instant::now();
        if let Some(at) = self.lock().get(&key) {
            if now.duration_since(*at) < CACHE_FOR {
                return true;
            }
        }
        let (hash, known) = match std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u))
        {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let Ok(_one_at_a_time) = self.bcrypt.acquire().await else {
            return false;
        };
        // bcrypt compares in constant time (subtle).
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let allowed = matches && known;
        if allowed {
            let mut verified = self.lock();
            if verified.len() >= CACHE_MAX {
                verified.clear();
            }
            verified.insert(key, Instant::now());
        }
        allowed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        // A panic while holding it cannot leave the map half-changed.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `Basic base64(user:password)` → (user, password), as bytes.
fn credentials(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = header.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    // RFC 7617: the user-id cannot contain a colon; the password can.
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

fn digest(user: &[u8], password: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&(user.len() as u64).to_be_bytes());
    context.update(user);
    context.update(password);
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// A token bucket: `burst` requests at once, then one per `interval` (Go's
/// `rate.NewLimiter(rate.Every(interval), burst)`).
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    /// (tokens, when they were counted).
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub(super) fn new(interval: Duration, burst: u32) -> RateLimit {
        RateLimit {
            interval,
            burst,
            bucket: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// [`Self::allow`] as of `now`, so that tests need no sleeping.
    fn allow_at(&self, now: Instant) -> bool {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = now.duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        bucket.0 = (bucket.0 + refill).min(f64::from(self.burst));
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -nbBC 4 "" secret`: cheap to verify in tests.
    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> BasicAuth {
        BasicAuth::new(BTreeMap::from([
            ("prometheus".to_owned(), hash("s3cret:with colon")),
            ("alice".to_owned(), hash("wonderland")),
        ]))
        .unwrap()
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_pass() {
        let auth = auth();
        assert!(
            auth.allows(Some(&basic("prometheus", "s3cret:with colon")))
                .await
        );
        // Again, from the cache.
        assert!(
            auth.allows(Some(&basic("prometheus", "s3cret:with colon")))
                .await
        );
        assert!(auth.allows(Some(&basic("alice", "wonderland"))).await);
        assert!(!auth.allows(Some(&basic("prometheus", "wonderland"))).await);
        assert!(
            !auth
                .allows(Some(&basic("alice", "s3cret:with colon")))
                .await
        );
        // An unknown user with a password that is some user's.
        assert!(!auth.allows(Some(&basic("mallory", "wonderland"))).await);
        assert!(!auth.allows(Some(&basic("", ""))).await);
        assert!(!auth.allows(None).await);
        for garbage in ["Basic", "Basic !!!", "Bearer abc", "Basic cHJvbWV0aGV1cw=="] {
            assert!(
                !auth.allows(Some(&HeaderValue::from_static(garbage))).await,
                "{garbage}"
            );
        }
        // The scheme is case-insensitive.
        let lower = basic("alice", "wonderland")
            .to_str()
            .unwrap()
            .replace("Basic", "basic");
        assert!(
            auth.allows(Some(&HeaderValue::from_str(&lower).unwrap()))
                .await
        );
    }

    #[test]
    fn hashes_are_checked_when_loaded() {
        for bad in [
            "secret",
            "$2y$10$tooshort",
            "$1$abcdefgh$0123456789012345678901",
        ] {
            let err = BasicAuth::new(BTreeMap::from([("u".to_owned(), bad.to_owned())]))
                .err()
                .unwrap();
            assert!(
                err.contains("not a bcrypt hash") && err.contains("htpasswd"),
                "{err}"
            );
        }
        // htpasswd's $2y$, Python's $2b$ and Go's $2a$ all pass.
        let b = "$2b$10$vHlKsugbEdhD5E.oDhMEYuZhuDs6hcFS1H4kWuKdogpNWrqEXEj6W";
        let y = b.replacen("$2b$", "$2y$", 1);
        assert!(BasicAuth::new(BTreeMap::from([("u".to_owned(), y)])).is_ok());
        assert!(BasicAuth::new(BTreeMap::from([("u".to_owned(), b.to_owned())])).is_ok());
        let a = b.replacen("$2b$", "$2a$", 1);
        assert!(BasicAuth::new(BTreeMap::from([("u".to_owned(), a)])).is_ok());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval() {
        let limit = RateLimit::new(Duration::from_millis(200), 3);
        let start = Instant::now();
        assert!((0..3).all(|_| limit.allow_at(start)));
        assert!(!limit.allow_at(start));
        let later = start + Duration::from_millis(220);
        assert!(limit.allow_at(later));
        assert!(!limit.allow_at(later));
    }
}
