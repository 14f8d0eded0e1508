//! Configuration (SPEC §2): built-in defaults → optional TOML file (`--config PATH` or
//! `TRIBUTARY_CONFIG`) → environment `TRIBUTARY__SECTION__KEY`. The seeds' plain names
//! `STRIPE_SECRET_KEY`, `STRIPE_CONNECT_CLIENT_ID`, `STRIPE_OAUTH_REDIRECT_URI` and
//! `DATABASE_URL` are honoured as aliases (a `TRIBUTARY__…` variable wins over its alias).
//! Secrets are [`SecretString`]s: they never appear in `Debug` output, logs or errors.

use std::collections::HashMap;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Every setting of one process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[stripe]`.
    pub stripe: StripeSettings,
    /// `[frontend]`.
    pub frontend: FrontendSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[sync]`.
    pub sync: SyncSettings,
    /// `[notify]`.
    pub notify: NotifySettings,
    /// `[log]`.
    pub log: LogSettings,
}

/// `[database]`: where the data lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://…?mode=rwc` or `postgres://…`.
    pub url: String,
    /// Apply pending migrations when a binary starts.
    pub migrate_on_start: bool,
}

/// `[server]`: where the API listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// The address to bind.
    pub host: String,
    /// The port to bind; `0` picks a free one.
    pub port: u16,
    /// Origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
}

/// `[stripe]`: the platform account and how to reach Stripe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    /// The platform secret key (`sk_test_…` or `sk_live_…`); its prefix sets the mode.
    pub secret_key: Option<SecretString>,
    /// The Connect application's client id (`ca_…`), for the OAuth link.
    pub connect_client_id: Option<String>,
    /// Where Stripe returns after OAuth: this server's `/api/stripe/oauth/callback`.
    pub oauth_redirect_uri: Option<String>,
    /// The API's base URL (the simulator's in tests and the demo).
    pub api_base: String,
    /// The Connect OAuth base URL (the simulator's in tests and the demo).
    pub connect_base: String,
    /// The signing secret of the Connect webhook endpoint (`/api/webhooks/stripe/connect`).
    pub connect_webhook_secret: Option<SecretString>,
    /// The signing secret of the platform-billing endpoint (`/api/webhooks/stripe`).
    pub platform_webhook_secret: Option<SecretString>,
    /// Request budget per connected account, shared by every task of the process.
    pub max_requests_per_second: u32,
    /// Longest one Stripe request may take (connect and answer), in seconds; a request a
    /// person waits on (the OAuth callback, a disconnect) spends at most this on each call.
    pub timeout_secs: u64,
}

/// `[frontend]`: the host's pages the OAuth callback returns to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSettings {
    /// The agency app's settings page.
    pub agency_settings_url: Option<String>,
    /// The client portal's settings page (the agency's when unset).
    pub client_settings_url: Option<String>,
}

/// `[auth]`: verifying the host's tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret shared with the host app.
    pub jwt_secret: Option<SecretString>,
    /// Still accepted during a rotation.
    pub jwt_previous_secret: Option<SecretString>,
}

/// `[sync]`: how syncs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// History pulled on the first sync, in days; 0 = everything.
    pub backfill_days: u32,
    /// Full re-list interval in days.
    pub reconcile_every_days: u32,
    /// Businesses synced at once by one process.
    pub concurrency: usize,
    /// How long a sync's lease lasts without renewal (renewed every third of it); a dead
    /// worker's business is picked up again after this.
    pub lease_secs: i64,
}

/// `[notify]`: signed notices to the host (optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Where notices are POSTed; none are sent when unset.
    pub url: Option<String>,
    /// The secret notices are signed with.
    pub secret: Option<SecretString>,
}

/// `[log]`: what the process logs, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `plain` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter for our crates, e.g. `info` or `debug`; dependencies log at `warn`.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The built-in defaults, as TOML: the single place a default is written.
pub const DEFAULTS: &str = r#"
[database]
url = "sqlite://tributary.db?mode=rwc"
migrate_on_start = true

[server]
host = "127.0.0.1"
port = 8080
cors_origins = []

[stripe]
api_base = "https://api.stripe.com"
connect_base = "https://connect.stripe.com"
max_requests_per_second = 25
timeout_secs = 30

[frontend]

[auth]

[sync]
backfill_days = 0
reconcile_every_days = 7
concurrency = 4
lease_secs = 60

[notify]

[log]
format = "plain"
level = "info"
"#;

/// Plain environment names honoured as aliases of settings keys.
pub const ALIASES: &[(&str, &str)] = &[
    ("STRIPE_SECRET_KEY", "stripe.secret_key"),
    ("STRIPE_CONNECT_CLIENT_ID", "stripe.connect_client_id"),
    ("STRIPE_OAUTH_REDIRECT_URI", "stripe.oauth_redirect_uri"),
    ("DATABASE_URL", "database.url"),
];

/// A configuration problem, naming the key. Its `Display` is the one line printed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {key}: {problem}")]
pub struct ConfigError {
    /// The key, e.g. `stripe.secret_key`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// What the process is about to do: decides which keys are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Serve the API, or run syncs: Stripe key and JWT secret required.
    Serve,
    /// Run syncs only (scheduler): the Stripe key is required.
    Sync,
    /// Apply migrations: only the database is needed.
    Migrate,
    /// The demo fills in what it needs itself.
    Demo,
}

fn env_name(key: &str) -> String {
    format!("TRIBUTARY__{}", key.replace('.', "__").to_uppercase())
}

impl Settings {
    /// Loads from the process environment, and from `file` or `TRIBUTARY_CONFIG` if given.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Loads with an explicit environment (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("TRIBUTARY_CONFIG").map(Into::into));
        if let Some(path) = &file {
            if !path.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            builder = builder
                .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml));
        }
        let tributary_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("TRIBUTARY__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("TRIBUTARY")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("server.cors_origins")
                .try_parsing(true)
                .source(Some(tributary_env.into_iter().collect())),
        );
        for (alias, key) in ALIASES {
            if let Some(value) = env.get(*alias)
                && !env.contains_key(&env_name(key))
            {
                builder = builder
                    .set_override(*key, value.clone())
                    .map_err(|e| ConfigError::new(*key, e.to_string()))?;
            }
        }
        let config = builder
            .build()
            .map_err(|e| ConfigError::new(file_key(&e), e.to_string()))?;
        serde_path_to_error::deserialize::<_, Settings>(config).map_err(|e| {
            let key = e.path().to_string();
            let problem = e.into_inner().to_string();
            ConfigError::new(if key == "." { "config".into() } else { key }, problem)
        })
    }

    /// Checks the values a purpose needs; the error names the first missing or malformed key.
    pub fn validate(&self, purpose: Purpose) -> Result<(), ConfigError> {
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if matches!(purpose, Purpose::Migrate | Purpose::Demo) {
            return Ok(());
        }
        let key = self
            .stripe
            .secret_key
            .as_ref()
            .ok_or_else(|| required("stripe.secret_key", Some("STRIPE_SECRET_KEY")))?;
        let key = key.expose_secret();
        if !(key.starts_with("sk_test_") || key.starts_with("sk_live_")) {
            // Never echo the value: it is a secret.
            return Err(ConfigError::new(
                "stripe.secret_key",
                "must start with sk_test_ or sk_live_",
            ));
        }
        for (k, v) in [
            ("stripe.api_base", &self.stripe.api_base),
            ("stripe.connect_base", &self.stripe.connect_base),
        ] {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(ConfigError::new(k, "must be an http(s) URL"));
            }
        }
        if !(1..=300).contains(&self.stripe.timeout_secs) {
            return Err(ConfigError::new(
                "stripe.timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if self.stripe.max_requests_per_second == 0 {
            return Err(ConfigError::new(
                "stripe.max_requests_per_second",
                "must be at least 1",
            ));
        }
        if self.sync.concurrency == 0 {
            return Err(ConfigError::new("sync.concurrency", "must be at least 1"));
        }
        if let Some(url) = &self.notify.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new("notify.url", "must be an http(s) URL"));
            }
            if self.notify.secret.is_none() {
                return Err(required("notify.secret", None));
            }
        }
        if self.sync.lease_secs < 3 {
            return Err(ConfigError::new("sync.lease_secs", "must be at least 3"));
        }
        if purpose == Purpose::Serve {
            let secret = self
                .auth
                .jwt_secret
                .as_ref()
                .ok_or_else(|| required("auth.jwt_secret", None))?;
            if secret.expose_secret().len() < 16 {
                return Err(ConfigError::new(
                    "auth.jwt_secret",
                    "must be at least 16 characters",
                ));
            }
            if let Some(id) = &self.stripe.connect_client_id
                && !id.starts_with("ca_")
            {
                return Err(ConfigError::new(
                    "stripe.connect_client_id",
                    "must start with ca_",
                ));
            }
        }
        Ok(())
    }

    /// `true` when the platform key is a live-mode key.
    pub fn livemode(&self) -> bool {
        self.stripe
            .secret_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().starts_with("sk_live_"))
    }
}

fn required(key: &str, alias: Option<&str>) -> ConfigError {
    let mut how = format!("is required (set {}", env_name(key));
    if let Some(alias) = alias {
        how.push_str(&format!(" or {alias}"));
    }
    how.push_str(", or the key in the config file)");
    ConfigError::new(key, how)
}

fn file_key(err: &config::ConfigError) -> String {
    match err {
        config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        config::ConfigError::NotFound(k) => k.clone(),
        _ => "config".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load_from(None, &env(&[])).unwrap();
        assert_eq!(s.database.url, "sqlite://tributary.db?mode=rwc");
        assert_eq!((s.server.host.as_str(), s.server.port), ("127.0.0.1", 8080));
        assert_eq!(s.stripe.api_base, "https://api.stripe.com");
        assert_eq!(s.stripe.connect_base, "https://connect.stripe.com");
        assert_eq!(s.stripe.max_requests_per_second, 25);
        assert_eq!(
            (
                s.sync.backfill_days,
                s.sync.reconcile_every_days,
                s.sync.concurrency
            ),
            (0, 7, 4)
        );
        assert!(s.server.cors_origins.is_empty());
    }

    #[test]
    fn environment_file_and_aliases_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[server]\nport = 9000\nhost = \"0.0.0.0\"\n[sync]\nconcurrency = 2\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            &env(&[
                ("TRIBUTARY__SERVER__PORT", "9100"),
                (
                    "TRIBUTARY__SERVER__CORS_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("STRIPE_SECRET_KEY", "sk_test_alias"),
                ("DATABASE_URL", "postgres://alias/db"),
                ("TRIBUTARY__DATABASE__URL", "postgres://wins/db"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9100, "env beats file");
        assert_eq!(s.server.host, "0.0.0.0", "file beats defaults");
        assert_eq!(s.sync.concurrency, 2);
        assert_eq!(
            s.server.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(
            s.stripe.secret_key.as_ref().unwrap().expose_secret(),
            "sk_test_alias"
        );
        assert_eq!(
            s.database.url, "postgres://wins/db",
            "TRIBUTARY__ beats the alias"
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        let s = Settings::load_from(None, &env(&[])).unwrap();
        let err = s.validate(Purpose::Serve).unwrap_err();
        assert_eq!(err.key, "stripe.secret_key");
        assert!(err.to_string().contains("STRIPE_SECRET_KEY"), "{err}");
        let s = Settings::load_from(None, &env(&[("STRIPE_SECRET_KEY", "sk_test_x")])).unwrap();
        assert_eq!(
            s.validate(Purpose::Serve).unwrap_err().key,
            "auth.jwt_secret"
        );
        assert!(s.validate(Purpose::Sync).is_ok());
        assert!(s.validate(Purpose::Migrate).is_ok());
    }

    #[test]
    fn malformed_values_are_named_without_echoing_secrets() {
        let err =
            Settings::load_from(None, &env(&[("TRIBUTARY__SERVER__PORT", "eighty")])).unwrap_err();
        assert_eq!(err.key, "server.port", "{err}");
        let err =
            Settings::load_from(None, &env(&[("TRIBUTARY__SERVER__PORT", "70000")])).unwrap_err();
        assert_eq!(err.key, "server.port", "{err}");
        let s = Settings::load_from(None, &env(&[("STRIPE_SECRET_KEY", "pk_live_SECRETVALUE")]))
            .unwrap();
        let err = s.validate(Purpose::Sync).unwrap_err();
        assert_eq!(err.key, "stripe.secret_key");
        assert!(!err.to_string().contains("SECRETVALUE"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[server]\nprot = 1\n").unwrap();
        let err = Settings::load_from(Some(&path), &env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("prot"),
            "unknown keys are named: {err}"
        );
        let err = Settings::load_from(Some(&dir.path().join("nope.toml")), &env(&[])).unwrap_err();
        assert_eq!(err.key, "--config");
    }

    /// Every settings key as `section.key`, read from the structs' `Debug` output (so a field
    /// added to a struct shows up here without a list to update).
    fn keys_of(settings: &Settings) -> std::collections::BTreeSet<String> {
        let debug = format!("{settings:#?}");
        let mut keys = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in debug.lines() {
            let indent = line.len() - line.trim_start().len();
            let Some((name, _)) = line.trim_start().split_once(": ") else {
                continue;
            };
            match indent {
                4 => section = name.to_owned(),
                8 => {
                    keys.insert(format!("{section}.{name}"));
                }
                _ => {}
            }
        }
        keys
    }

    #[test]
    fn example_config_and_readme_cover_every_key() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let example = std::path::Path::new(root).join("tributary.example.toml");
        let settings =
            Settings::load_from(Some(&example), &env(&[])).expect("the example file loads");
        let keys = keys_of(&settings);
        assert!(
            keys.contains("stripe.secret_key") && keys.contains("sync.lease_secs"),
            "{keys:?}"
        );
        let text = std::fs::read_to_string(&example).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.trim_start_matches('#').trim().split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                documented.insert(format!("{section}.{key}"));
            }
        }
        assert_eq!(
            documented, keys,
            "tributary.example.toml drifted from the settings structs"
        );
        let readme = std::fs::read_to_string(std::path::Path::new(root).join("README.md")).unwrap();
        for key in &keys {
            assert!(
                readme.contains(&format!("`{key}`")),
                "README's configuration table lacks `{key}`"
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = Settings::load_from(
            None,
            &env(&[
                ("STRIPE_SECRET_KEY", "sk_test_TOPSECRET1"),
                ("TRIBUTARY__AUTH__JWT_SECRET", "jwt-TOPSECRET2-long-enough"),
                (
                    "TRIBUTARY__STRIPE__CONNECT_WEBHOOK_SECRET",
                    "whsec_TOPSECRET3",
                ),
            ]),
        )
        .unwrap();
        let debug = format!("{s:?}");
        for needle in ["TOPSECRET1", "TOPSECRET2", "TOPSECRET3"] {
            assert!(!debug.contains(needle), "{needle} leaked into Debug");
        }
        assert!(!s.livemode());
    }
}
