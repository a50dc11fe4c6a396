//! Routes (`rte/{org}/{name}`, shared by an organization and its sandbox,
//! like bots), runs (`run/{org}/{uid}/{route}`, at most one per user and
//! route), the timers of waiting runs (`rnw/{until_ms:020}/{runId}`) and
//! each organization's round-robin position (`rrb/{org}`).

use super::codec::{encode, key};
use super::{Store, StoreError, WriteTx};
use crate::routes::{Route, Run};

fn route_key(org: &str, name: &str) -> Vec<u8> {
    key(&["rte", crate::model::live_id(org), name])
}

fn run_key(run: &Run) -> Vec<u8> {
    key(&["run", &run.org, &run.uid, &run.route])
}

fn timer_key(until_ms: i64, run_id: &str) -> Vec<u8> {
    format!("rnw/{:020}/{run_id}", until_ms.max(0)).into_bytes()
}

impl Store {
    /// The route `name` of `org`.
    pub fn route(&self, org: &str, name: &str) -> Result<Option<Route>, StoreError> {
        self.get(&route_key(org, name))
    }

    /// Every route of `org`, by name.
    pub fn routes(&self, org: &str) -> Result<Vec<Route>, StoreError> {
        let org = crate::model::live_id(org);
        self.scan(&format!("rte/{org}/"), None, usize::MAX, |_: &Route| true)
    }

    /// The run of `route` for user `uid`.
    pub fn run(&self, org: &str, uid: &str, route: &str) -> Result<Option<Run>, StoreError> {
        self.get(&key(&["run", org, uid, route]))
    }

    /// Every run of user `uid`.
    pub fn runs_of(&self, org: &str, uid: &str) -> Result<Vec<Run>, StoreError> {
        self.scan(&format!("run/{org}/{uid}/"), None, usize::MAX, |r: &Run| {
            r.uid == uid
        })
    }

    /// Every run that is not waiting (to continue after a restart).
    pub fn running_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.scan("run/", None, usize::MAX, |r: &Run| r.wait.is_none())
    }

    /// `(org, uid, route)` of the waiting runs whose wait ended by `now_ms`,
    /// at most `limit`, earliest first.
    pub fn due_waits(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let end = timer_key(now_ms + 1, "");
        let mut out = Vec::new();
        for kv in self.inner.db.range(b"rnw/".to_vec()..end) {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The next round-robin position of `org`.
    pub fn round_robin(&self, org: &str) -> Result<u64, StoreError> {
        Ok(self.get_u64(&key(&["rrb", org]))?.unwrap_or(0))
    }
}

impl WriteTx<'_> {
    /// Stages `route` (created or replaced).
    pub fn put_route(&mut self, route: &Route) {
        self.batch
            .insert(route_key(self.org, &route.name), encode(route));
    }

    /// Stages the removal of route `name`.
    pub fn delete_route(&mut self, name: &str) {
        self.batch.remove(route_key(self.org, name));
    }

    /// Stages `run` as it now is, replacing `before` (whose timer, if it
    /// waited, is removed); a waiting run gets its timer.
    pub fn put_run(&mut self, before: Option<&Run>, run: &Run) {
        if let Some(w) = before.and_then(|b| b.wait.as_ref().map(|w| (w, &b.run_id))) {
            self.batch.remove(timer_key(w.0.until_ms, w.1));
        }
        if let Some(w) = &run.wait {
            self.batch.insert(
                timer_key(w.until_ms, &run.run_id),
                encode(&(&run.org, &run.uid, &run.route)),
            );
        }
        self.batch.insert(run_key(run), encode(run));
    }

    /// Stages the removal of `run` and its timer.
    pub fn delete_run(&mut self, run: &Run) {
        if let Some(w) = &run.wait {
            self.batch.remove(timer_key(w.until_ms, &run.run_id));
        }
        self.batch.remove(run_key(run));
    }

    /// Stages the round-robin position `next` of this organization.
    pub fn put_round_robin(&mut self, next: u64) {
        self.batch
            .insert(key(&["rrb", self.org]), &next.to_be_bytes());
    }
}
