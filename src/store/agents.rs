//! Agents (`agt/`, by lowercase email, indexed by `aem/`; `agc/` the last `aid`) and the
//! replies kept under idempotency keys (`idm/`).

use super::codec::{encode, key};
use super::{Store, StoreError, WriteTx};
use crate::model::{live_id, Agent, IdempotentReply};

impl Store {
    /// The agent with `email` (any case).
    pub fn agent(&self, org: &str, email: &str) -> Result<Option<Agent>, StoreError> {
        // A sandbox shares its organization's agents.
        self.get(&key(&["agt", live_id(org), &email.to_lowercase()]))
    }

    /// Every agent of `org`, by email.
    pub fn agents(&self, org: &str) -> Result<Vec<Agent>, StoreError> {
        let org = live_id(org);
        self.scan(&format!("agt/{org}/"), None, usize::MAX, |_: &Agent| true)
    }

    /// The reply kept under idempotency `key_` of `org`.
    pub fn idempotent(&self, org: &str, key_: &str) -> Result<Option<IdempotentReply>, StoreError> {
        self.get(&key(&["idm", org, key_]))
    }

    /// Removes idempotency records created before `before_ms`; returns how many.
    pub fn expire_idempotent(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut batch = super::engine::Batch::default();
        let mut n = 0;
        for kv in self.inner.db.scan_prefix(b"idm/") {
            let (k, v) = kv?;
            let rec: IdempotentReply = serde_json::from_slice(&v)?;
            if rec.created_ms < before_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.inner.db.apply_batch(batch)?;
        Ok(n)
    }
}

impl WriteTx<'_> {
    /// Stages `agent` (a new one takes its `aid` from [`WriteTx::next_aid`]).
    pub fn put_agent(&mut self, agent: &Agent) {
        self.batch.insert(
            key(&["agt", live_id(self.org), &agent.email.to_lowercase()]),
            encode(agent),
        );
        self.batch.insert(
            key(&["aem", &agent.email.to_lowercase(), live_id(self.org)]),
            &[],
        );
    }

    /// Stages the removal of the agent with `email` (any case), with its
    /// console password: its sessions end with it.
    pub fn delete_agent(&mut self, email: &str) {
        let email = email.to_lowercase();
        let org = live_id(self.org);
        self.batch.remove(key(&["agt", org, &email]));
        self.batch.remove(key(&["apw", org, &email]));
        self.batch.remove(key(&["aem", &email, org]));
    }

    /// Allocates the next agent id of the organization (1, 2, …).
    pub fn next_aid(&mut self) -> Result<u64, StoreError> {
        let aid = self
            .store
            .get_u64(&key(&["agc", live_id(self.org)]))?
            .unwrap_or(0)
            + 1;
        self.batch
            .insert(key(&["agc", live_id(self.org)]), &aid.to_be_bytes());
        Ok(aid)
    }

    /// Stages `reply` under idempotency key `key_`.
    pub fn put_idempotent(&mut self, key_: &str, reply: &IdempotentReply) {
        self.batch
            .insert(key(&["idm", self.org, key_]), encode(reply));
    }

    /// Stages the removal of idempotency key `key_`.
    pub fn forget_idempotent(&mut self, key_: &str) {
        self.batch.remove(key(&["idm", self.org, key_]));
    }
}
