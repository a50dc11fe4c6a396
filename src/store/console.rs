//! The agent console's records: agents' password hashes (`apw/`), the
//! email index sign-in searches (`aem/`), sessions (`ses/`) and the users'
//! console links (`ulk/`).
//!
//! A user's `url` is `{public_base_url}/console/u/{link}`: `link` is 22
//! random base64url characters given to the user when it is created (or,
//! for users created before, when the gateway starts with a
//! `public_base_url`), so the URL carries neither the uid nor the phone.

use super::codec::{decode, encode, key};
use super::{Store, StoreError, WriteTx};
use crate::model::{live_id, AgentPassword, ConsoleSession, UserRecord};
use base64::Engine;

/// Path of the console's user pages under `public_base_url`.
pub const USER_PATH: &str = "/console/u/";

/// How many organizations sign-in tries for one email.
pub const MAX_ORGS_PER_EMAIL: usize = 8;

fn new_link() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The link of a user `url` made under any base (its last path segment).
fn link_of(url: &str) -> Option<&str> {
    url.rsplit_once(USER_PATH)
        .map(|(_, l)| l)
        .filter(|l| !l.is_empty() && !l.contains('/'))
}

impl Store {
    /// The console password of agent `email` (any case) of `org`.
    pub fn agent_password(
        &self,
        org: &str,
        email: &str,
    ) -> Result<Option<AgentPassword>, StoreError> {
        self.get(&key(&["apw", live_id(org), &email.to_lowercase()]))
    }

    /// The organizations with an agent `email` (any case), at most
    /// [`MAX_ORGS_PER_EMAIL`].
    pub fn orgs_of_agent(&self, email: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("aem/{}/", email.to_lowercase());
        self.inner
            .db
            .scan_prefix(prefix.as_bytes())
            .keys()
            .take(MAX_ORGS_PER_EMAIL)
            .map(|k| {
                let k = k?;
                Ok(String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            })
            .collect()
    }

    /// The session stored under `sid_sha256` (hex SHA-256 of its id).
    pub fn console_session(&self, sid_sha256: &str) -> Result<Option<ConsoleSession>, StoreError> {
        self.get(&key(&["ses", sid_sha256]))
    }

    /// The `(org, uid)` a console link points at.
    pub fn user_by_link(&self, link: &str) -> Result<Option<(String, String)>, StoreError> {
        let v: Option<(String, String)> = decode(self.inner.db.get(key(&["ulk", link]))?)?;
        Ok(v)
    }

    /// Removes sessions that expired before `now_ms`; returns them with
    /// the hash they were stored under. Not waited for: a session that
    /// survives a crash is still refused by its expiry.
    pub fn expire_console_sessions(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, ConsoleSession)>, StoreError> {
        let mut batch = super::engine::Batch::default();
        let mut gone = Vec::new();
        for kv in self.inner.db.scan_prefix(b"ses/") {
            let (k, v) = kv?;
            let s: ConsoleSession = serde_json::from_slice(&v)?;
            if s.expires_ms < now_ms {
                gone.push((String::from_utf8_lossy(&k[4..]).into_owned(), s));
                batch.remove(k);
            }
        }
        self.inner.db.apply_batch(batch)?;
        Ok(gone)
    }

    /// Sets the base of users' console URLs (`public_base_url`) and gives
    /// every user whose `url` is not under it one: its earlier link kept,
    /// or a new one. The base the users were last linked under is kept in
    /// `meta/console_base`: a start with the same base reads no user (every
    /// user created since got its link at creation). Returns how many users
    /// changed; durable on return.
    pub async fn set_console_base(&self, base: &str) -> Result<usize, StoreError> {
        let base = base.trim_end_matches('/').to_string();
        let _ = self.inner.console_base.set(base.clone());
        const META: &[u8] = b"meta/console_base";
        if self
            .inner
            .db
            .get(META)?
            .is_some_and(|v| *v == *base.as_bytes())
        {
            return Ok(0);
        }
        let prefix = format!("{base}{USER_PATH}");
        let mut batch = super::engine::Batch::default();
        let mut n = 0;
        for kv in self.inner.db.scan_prefix(b"usr/") {
            let (k, v) = kv?;
            let mut rec = super::codec::decode_user(&v)?;
            if rec.user.url.starts_with(&prefix) && link_of(&rec.user.url).is_some() {
                continue;
            }
            let org = String::from_utf8_lossy(&k[4..])
                .split_once('/')
                .map(|(o, _)| o.to_string())
                .unwrap_or_default();
            let link = link_of(&rec.user.url).map_or_else(new_link, str::to_string);
            batch.insert(
                key(&["ulk", &link]),
                encode(&(org.as_str(), rec.user.uid.as_str())),
            );
            rec.user.url = format!("{prefix}{link}");
            batch.insert(k, super::codec::encode_user(&rec));
            n += 1;
        }
        // The links and the base they were made under, in one batch.
        batch.insert(META, base.as_bytes());
        self.inner.db.apply_batch(batch)?;
        self.forget_users();
        self.flush().await?;
        Ok(n)
    }
}

impl WriteTx<'_> {
    /// Stages a new user: gives it its console link (when a
    /// `public_base_url` is set), then [`WriteTx::put_user`].
    pub fn put_new_user(&mut self, rec: &mut UserRecord) {
        if let Some(base) = self.store.inner.console_base.get() {
            let link = new_link();
            self.batch.insert(
                key(&["ulk", &link]),
                encode(&(self.org, rec.user.uid.as_str())),
            );
            rec.user.url = format!("{base}{USER_PATH}{link}");
        }
        self.put_user(rec);
    }

    /// Stages the console password of agent `email`.
    pub fn put_agent_password(&mut self, email: &str, pw: &AgentPassword) {
        self.batch.insert(
            key(&["apw", live_id(self.org), &email.to_lowercase()]),
            encode(pw),
        );
    }

    /// Stages session `s` under `sid_sha256`.
    pub fn put_console_session(&mut self, sid_sha256: &str, s: &ConsoleSession) {
        self.batch.insert(key(&["ses", sid_sha256]), encode(s));
    }

    /// Stages the removal of the session under `sid_sha256` (sign-out).
    pub fn delete_console_session(&mut self, sid_sha256: &str) {
        self.batch.remove(key(&["ses", sid_sha256]));
    }
}
