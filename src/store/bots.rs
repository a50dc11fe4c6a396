//! Bots (`bot/`) and the instance-wide index of botIDs (`bix/`), through
//! which an inbound provider URL finds its organization.

use super::codec::{bix_key, bot_key, encode};
use super::{Store, StoreError, WriteTx};
use crate::model::Bot;

impl Store {
    /// The bot `id` of organization `org`.
    pub fn bot(&self, org: &str, id: u64) -> Result<Option<Bot>, StoreError> {
        // A sandbox shares its organization's bot definitions.
        self.get(&bot_key(crate::model::live_id(org), id))
    }

    /// Every bot of `org`, by `botID`.
    pub fn bots(&self, org: &str) -> Result<Vec<Bot>, StoreError> {
        let org = crate::model::live_id(org);
        self.scan(&format!("bot/{org}/"), None, usize::MAX, |_: &Bot| true)
    }

    /// The organization owning bot `bot_id` (inbound provider URLs carry
    /// only the botID; botIDs are unique on the instance).
    pub fn bot_org(&self, bot_id: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .db
            .get(bix_key(bot_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The organization and record of bot `bot_id` (an inbound provider
    /// URL carries only the botID), through the cache.
    pub fn bot_by_id(&self, bot_id: u64) -> Result<Option<(String, Bot)>, StoreError> {
        let generation = {
            let cache = self.inner.bots.read().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = cache.map.get(&bot_id) {
                return Ok(Some(hit.clone()));
            }
            cache.generation
        };
        let Some(org) = self.bot_org(bot_id)? else {
            return Ok(None);
        };
        let Some(bot) = self.bot(&org, bot_id)? else {
            return Ok(None);
        };
        // Another node may write the bot: with a shared backend nothing is
        // cached.
        if !self.inner.db.shared() {
            self.inner
                .bots
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .fill(generation, bot_id, (org.clone(), bot.clone()));
        }
        Ok(Some((org, bot)))
    }

    /// Empties the bot cache after a write that staged a bot.
    pub(super) fn bots_changed(&self) {
        self.inner
            .bots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .forget();
    }

    /// Every bot of every organization, as `(org, bot)`.
    pub fn all_bots(&self) -> Result<Vec<(String, Bot)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.db.scan_prefix(b"bix/") {
            let (k, org) = kv?;
            let id = std::str::from_utf8(&k[4..])
                .ok()
                .and_then(|s| s.parse().ok());
            let org = String::from_utf8_lossy(&org).into_owned();
            if let Some(bot) = id.map(|id| self.bot(&org, id)).transpose()?.flatten() {
                out.push((org, bot));
            }
        }
        Ok(out)
    }
}

impl WriteTx<'_> {
    /// Stages `bot` and its instance-wide index by `botID`.
    pub fn put_bot(&mut self, bot: &Bot) {
        let org = crate::model::live_id(self.org);
        self.batch.insert(bot_key(org, bot.id), encode(bot));
        self.batch.insert(bix_key(bot.id), org.as_bytes());
        self.bots_changed = true;
    }
}
